"""A ReAct run's agent as the run controller folds it from the log: which step it is at, what was
decided there, and the history its next decision task is given. Pure, no I/O, no clock: a restarted
controller (or one started from a snapshot) folds the same log to the same state, so it decides
the same next step (maze/head/agent.py).

Task ids are a function of the step (`s3-decide`, `s3-call0-multiply`), so an append decided twice
(a head killed between recording it and seeing it come back) is the same append: the fold takes
it once (a task id is taken once), and a step's decision is folded once (`decided` only grows).
"""

from __future__ import annotations

from msgspec import Struct

from maze.events.agents import (
    AgentDecided,
    AgentFinal,
    AgentObserved,
    AgentRepair,
    AgentSpec,
    AgentToolCall,
)
from maze.events.codec import encode_value
from maze.events.specs import TaskSpec


def decide_id(step: int) -> str:
    return f"s{step}-decide"


def call_id(step: int, call: int, tool: str) -> str:
    return f"s{step}-call{call}-{tool}"[:128]


class AgentState(Struct):
    spec: AgentSpec
    step: int = 0  # decision tasks appended (the current one is `decide_id(step)`)
    decided: int = 0  # the last step whose decision is recorded (`agent.decision`)
    observed: int = 0  # the last step whose outcome the history holds (observations or a repair)
    calls: list[tuple[int, str, str]] = []  # the tool calls of step `decided`: (index, task id, tool)
    history: list[bytes] = []  # the entries the next decision sees, each plain msgpack
    final: bool = False


def fold_appended(agent: AgentState, specs: list[TaskSpec]) -> None:
    """A `task.appended` the run took: the next decision task moves the agent to its step."""
    for spec in specs:
        if spec.task_id == decide_id(agent.step + 1):
            agent.step += 1


def fold_agent_event(
    agent: AgentState, event: AgentDecided | AgentToolCall | AgentRepair | AgentObserved | AgentFinal
) -> None:
    """One agent event (each is folded once: a step moves forward only)."""
    if isinstance(event, AgentDecided):
        if event.step > agent.decided:
            agent.decided, agent.calls = event.step, []
    elif isinstance(event, AgentToolCall):
        call = (event.call, event.task_id, event.tool)
        if event.step == agent.decided and call not in agent.calls:
            agent.calls = [*agent.calls, call]
    elif isinstance(event, AgentRepair):
        if event.step > agent.observed:
            agent.observed = event.step
            agent.history = [*agent.history, repair_entry(event.step, event.message, event.raw)]
    elif isinstance(event, AgentObserved):
        if event.step > agent.observed:
            agent.observed = event.step
            agent.history = [*agent.history, *(o.entry for o in event.observations)]
    elif isinstance(event, AgentFinal):
        agent.final = True


def repair_entry(step: int, message: str, raw: str = "") -> bytes:
    """The history entry of a decision that could not be acted on: the repair message as its
    observation, and the decision as it came as a `malformed` action (what a chat model is shown
    as its own reply, maze/agents/messages.py)."""
    return encode_value(
        {
            "step": step,
            "action": {"malformed": {"raw": raw, "why": message}},
            "observation": {"repair": message},
        }
    )
