"""What the simulated agents do: apps, their tools, and one planned user turn per trace.

Planning is pure (a seeded ``random.Random`` in, a :class:`TurnPlan` out); :mod:`stream.demo.fleet`
turns plans into real OpenTelemetry spans. Scenario names are the labels a judge should recover:

healthy, tool_error, agent_exception, tool_loop, frustrated_user, truncated
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any

SCENARIO_WEIGHTS: dict[str, float] = {
    "healthy": 0.70,
    "tool_error": 0.08,
    "agent_exception": 0.04,
    "tool_loop": 0.06,
    "frustrated_user": 0.07,
    "truncated": 0.05,
}
FAILURE_SCENARIOS = frozenset(SCENARIO_WEIGHTS) - {"healthy"}

DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
CITIES = [("SFO", "San Francisco"), ("JFK", "New York"), ("LHR", "London"), ("CDG", "Paris"),
          ("NRT", "Tokyo"), ("BER", "Berlin")]


@dataclass(frozen=True)
class AppSpec:
    service: str  # resource service.name
    agent: str  # gen_ai.agent.name
    version: str
    provider: str  # gen_ai.provider.name
    model: str  # gen_ai.request.model
    response_model: str
    system_prompt: str
    frustration: tuple[str, ...]
    raw_finish: dict[str, str]  # normalized finish reason -> what the provider reports


_OPENAI = {"stop": "stop", "tool_call": "tool_calls", "length": "length"}
_ANTHROPIC = {"stop": "end_turn", "tool_call": "tool_use", "length": "max_tokens"}

APPS: tuple[AppSpec, ...] = (
    AppSpec("support-bot", "SupportAgent", "2.3.1", "openai", "gpt-4o-mini", "gpt-4o-mini-2024-07-18",
            "You are a helpful customer support agent for Acme Home. Be concise and polite.",
            ("That's wrong, I never received anything.", "Let me talk to a human.",
             "This is useless, I already gave you the order number.", "No, I meant my other order."),
            _OPENAI),
    AppSpec("travel-planner", "TravelAgent", "0.9.0", "anthropic", "claude-sonnet-4-5",
            "claude-sonnet-4-5-20250929",
            "You help users find and book flights. Always confirm dates before booking.",
            ("No, I said Tuesday, not Thursday.", "That's not what I asked.",
             "Still the wrong airport.", "Why is this so hard? I just want the cheapest flight."),
            _ANTHROPIC),
    AppSpec("code-helper", "CodeAssistant", "1.4.0", "openai", "gpt-4.1", "gpt-4.1-2025-04-14",
            "You are a coding assistant with access to the user's repository.",
            ("Just answer directly.", "That code doesn't even compile.", "You're not helping.",
             "That's not what I asked, I wanted a fix, not an explanation."),
            _OPENAI),
)


@dataclass
class ToolStep:
    name: str
    call_id: str
    arguments: dict[str, Any]
    result: str | None = None  # JSON text returned to the model
    error: tuple[str, str] | None = None  # (exception type, message)
    duration_s: float = 0.2


@dataclass
class TurnPlan:
    app: AppSpec
    scenario: str
    conversation_id: str
    user_id: str
    user_text: str
    history: list[dict[str, Any]]  # earlier turns, GenAI parts format
    tools: list[ToolStep]
    final_text: str
    final_finish: str = "stop"  # normalized: stop | length
    max_tokens: int = 1024
    llm_error: tuple[str, str] | None = None  # the last chat call fails; the agent gives up
    agent_error: tuple[str, str] | None = None  # the agent itself raises after the tools
    chat_durations: list[float] = field(default_factory=list)  # one per LLM call


@dataclass
class Conversation:
    id: str
    user_id: str
    history: list[dict[str, Any]] = field(default_factory=list)


def text_message(role: str, text: str, finish_reason: str | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": role, "parts": [{"type": "text", "content": text}]}
    if finish_reason:
        msg["finish_reason"] = finish_reason
    return msg


def _call_id(rng: random.Random, app: AppSpec) -> str:
    prefix = "toolu_" if app.provider == "anthropic" else "call_"
    return prefix + "".join(rng.choices("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", k=24))


def _j(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


# ---- per-app tasks: (user text, healthy tool steps, final answer, tool that can fail + its error) ------
Task = tuple[str, list[ToolStep], str, tuple[int, str, str]]


def _support_task(rng: random.Random, app: AppSpec) -> Task:
    order = f"A{rng.randint(10000, 99999)}"
    lookup = ToolStep("lookup_order", _call_id(rng, app), {"order_id": order},
                      _j({"order_id": order, "status": "in_transit", "carrier": "UPS", "eta": "2025-06-12"}))
    kind = rng.randrange(3)
    if kind == 0:
        return (f"Hi, where is my order {order}? It was supposed to arrive {rng.choice(DAYS)}.", [lookup],
                f"Your order {order} is in transit with UPS and should arrive on June 12.",
                (0, "OrderNotFoundError", f"order {order} not found"))
    if kind == 1:
        amount = rng.choice([24.99, 49.5, 89.99, 129.0])
        refund = ToolStep("issue_refund", _call_id(rng, app),
                          {"order_id": order, "amount": amount, "reason": "damaged"},
                          _j({"refund_id": f"R-{rng.randint(100000, 999999)}", "status": "approved"}))
        return (f"The blender from order {order} arrived broken. Can I get a refund?", [lookup, refund],
                f"I'm sorry about that! I've issued a refund of ${amount:.2f} for order {order}; "
                "it will reach your card in 5-7 business days.",
                (1, "PaymentGatewayTimeout", "payment gateway did not answer within 30s"))
    kb = ToolStep("search_kb", _call_id(rng, app), {"query": "return policy opened electronics"},
                  _j([{"title": "Returns", "snippet": "Opened electronics can be returned within 15 days."}]))
    return ("What's your return policy for opened electronics?", [kb],
            "Opened electronics can be returned within 15 days of delivery with the original packaging.",
            (0, "KnowledgeBaseUnavailable", "vector index 'kb-prod' is unavailable"))


def _travel_task(rng: random.Random, app: AppSpec) -> Task:
    (a, city_a), (b, city_b) = rng.sample(CITIES, 2)
    day = rng.choice(DAYS)
    flight = f"{rng.choice(['UA', 'BA', 'AF', 'LH', 'NH'])}{rng.randint(10, 999)}"
    search = ToolStep("search_flights", _call_id(rng, app), {"origin": a, "destination": b, "day": day},
                      _j([{"flight_id": flight, "depart": "08:15", "price_usd": rng.randint(180, 1400)}]))
    kind = rng.randrange(3)
    if kind == 0:
        return (f"Find me a flight from {city_a} to {city_b} on {day}.", [search],
                f"The best option is {flight}, leaving {a} at 08:15 on {day}.",
                (0, "UpstreamTimeout", "GDS search timed out after 20s"))
    if kind == 1:
        book = ToolStep("book_flight", _call_id(rng, app), {"flight_id": flight, "seat": "window"},
                        _j({"confirmation": f"PNR{rng.randint(1000, 9999)}", "seat": "23A"}))
        return (f"Book the cheapest flight from {city_a} to {city_b} on {day}, window seat please.",
                [search, book], f"Booked {flight} on {day}, seat 23A (window).",
                (1, "SeatUnavailableError", f"no window seats left on {flight}"))
    weather = ToolStep("get_weather", _call_id(rng, app), {"city": city_b, "day": day},
                       _j({"forecast": "light rain", "high_c": rng.randint(8, 30)}))
    return (f"What's the weather going to be like in {city_b} on {day}?", [weather],
            f"Expect light rain in {city_b} on {day}; pack an umbrella.",
            (0, "WeatherAPIError", "HTTP 503 from weather provider"))


def _code_task(rng: random.Random, app: AppSpec) -> Task:
    module = rng.choice(["utils", "parser", "billing", "auth"])
    kind = rng.randrange(3)
    if kind == 0:
        read = ToolStep("read_file", _call_id(rng, app), {"path": f"src/{module}.py"},
                        _j({"content": "def parse_date(s):\n    return datetime.strptime(s, '%d/%m/%Y')\n"}))
        tests = ToolStep("run_tests", _call_id(rng, app), {"path": f"tests/test_{module}.py"},
                         _j({"passed": 11, "failed": 1, "output": "ValueError: time data '2025-06-01' "
                             "does not match format '%d/%m/%Y'"}))
        return (f"Why does test_parse_date fail in tests/test_{module}.py?", [read, tests],
                "parse_date expects DD/MM/YYYY but the test passes an ISO date; use date.fromisoformat.",
                (1, "SandboxError", "test sandbox exited with code 137 (OOM)"))
    if kind == 1:
        docs = ToolStep("search_docs", _call_id(rng, app), {"query": "pandas read_csv skip rows"},
                        _j([{"title": "pandas.read_csv", "snippet": "skiprows : int, list-like or callable"}]))
        return ("How do I read a CSV with pandas and skip the first two rows?", [docs],
                "Use `pd.read_csv(path, skiprows=2)`.",
                (0, "DocsIndexError", "docs index is being rebuilt"))
    grep = ToolStep("grep", _call_id(rng, app), {"pattern": "getData", "path": "src/"},
                    _j({"matches": [f"src/{module}.py:12", "src/api.py:40"]}))
    return ("Rename getData to get_data everywhere.", [grep],
            f"getData is used in src/{module}.py and src/api.py; I renamed both call sites.",
            (0, "PermissionError", "[Errno 13] Permission denied: 'src/'"))


_TASKS = {"support-bot": _support_task, "travel-planner": _travel_task, "code-helper": _code_task}


def choose_scenario(rng: random.Random) -> str:
    return rng.choices(list(SCENARIO_WEIGHTS), weights=list(SCENARIO_WEIGHTS.values()))[0]


def plan_turn(rng: random.Random, app: AppSpec, scenario: str, conv: Conversation) -> TurnPlan:
    """Plan one user turn (one trace) of ``scenario`` continuing ``conv``."""
    user_text, tools, final, (fail_at, err_type, err_msg) = _TASKS[app.service](rng, app)
    history = list(conv.history)
    plan = TurnPlan(app, scenario, conv.id, conv.user_id, user_text, history, tools, final)
    if scenario == "frustrated_user":
        if not history:  # the earlier turn happened before tracing started: it shows up as history
            history += [text_message("user", user_text), text_message("assistant", final)]
        plan.user_text = rng.choice(app.frustration)
        plan.final_text = "I'm sorry for the confusion. " + final
    elif scenario == "tool_error":
        failed = tools[min(fail_at, len(tools) - 1)]
        failed.result, failed.error = None, (err_type, err_msg)
        plan.tools = tools[: tools.index(failed) + 1]
        plan.final_text = f"Sorry, I couldn't complete that right now ({err_msg}). Please try again later."
    elif scenario == "agent_exception":
        if rng.random() < 0.5:
            plan.llm_error = ("RateLimitError", "Error code: 429 - Rate limit reached for requests")
        else:
            plan.agent_error = ("JSONDecodeError", "Expecting value: line 1 column 1 (char 0)")
        plan.final_text = ""
    elif scenario == "tool_loop":
        first = tools[0]
        plan.tools = [ToolStep(first.name, _call_id(rng, app), dict(first.arguments), first.result)
                      for _ in range(rng.randint(3, 5))]
        plan.final_text = "I'm still looking into this, let me check again."
    elif scenario == "truncated":
        plan.max_tokens = 256
        long = final + " Here is a detailed breakdown of every option, step by step, including the"
        plan.final_text, plan.final_finish = long, "length"
    for step in plan.tools:
        step.duration_s = rng.uniform(0.05, 1.5)
    plan.chat_durations = [rng.uniform(0.4, 3.0) for _ in range(len(plan.tools) + 1)]
    return plan
