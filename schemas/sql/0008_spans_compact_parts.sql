-- Keep spans parts up to 256 MB (uncompressed) in the Compact format: one data file per part
-- instead of a .bin and a mark file per column and per Map/Array substream. A 15k-span insert is
-- ~40 MB; written Wide, an 8k-span insert and its merges cost ClickHouse ~1.6x the CPU per span of
-- Compact ones (bench/store_cost.py, bench/README.md). Merges past this size still produce Wide parts.
-- Only a table setting: existing parts are not rewritten.
ALTER TABLE {db}.spans MODIFY SETTING min_bytes_for_wide_part = 268435456;
