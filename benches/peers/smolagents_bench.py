"""smolagents' side of benches/loop_vs_peers.sh: N concurrent runs of a ToolCallingAgent, each 10
model turns (9 `calc` tool calls, then the `final_answer` tool call that smolagents ends a run
with) against a scripted model that answers instantly without any network. Prints one JSON line
(see measure.py for the fields and how memory is measured).

    python benches/peers/smolagents_bench.py --runs 1000   # with the python of benches/peers/setup.sh

smolagents is synchronous, so each run gets its own thread: all N are in flight at once, taking
turns at the GIL. Seconds are the wall time from starting the first run to the last one finishing.
"""
import importlib.resources
import threading
import time

import smolagents
import yaml
from smolagents import ToolCallingAgent, tool
from smolagents.memory import ActionStep
from smolagents.models import ChatMessage, ChatMessageToolCall, ChatMessageToolCallFunction, MessageRole, Model
from smolagents.monitoring import LogLevel

from measure import ANSWER, EXPRESSION, INSTRUCTIONS, TASK, TOOL_TURNS, current_rss_kb, parse_arguments, report


@tool
def calc(expression: str) -> int:
    """Evaluates an arithmetic expression.

    Args:
        expression: the expression, e.g. (17*23)+4
    """
    # Trivial on purpose: the benchmark measures the agent loop. reagent's side runs its real calc
    # component, so any difference in tool cost counts against reagent.
    return ANSWER


class ScriptedModel(Model):
    """Calls calc until the conversation holds TOOL_TURNS results, then answers. It reads the turn
    from the messages the agent sends, so one model serves every run. A run's first turn waits at
    `first_turn` (if given) so that the idle runs can be measured."""

    def __init__(self, first_turn: threading.Barrier | None = None):
        super().__init__(model_id="scripted")
        self.first_turn = first_turn

    def generate(self, messages, stop_sequences=None, response_format=None, tools_to_call_from=None, **kwargs):
        turn = sum(1 for message in messages if message.role == MessageRole.TOOL_RESPONSE)
        if turn == 0 and self.first_turn is not None:
            self.first_turn.wait()
        if turn < TOOL_TURNS:
            name, arguments = "calc", {"expression": EXPRESSION}
        else:
            name, arguments = "final_answer", {"answer": str(ANSWER)}
        call = ChatMessageToolCall(ChatMessageToolCallFunction(arguments, name), id=f"call_{turn}", type="function")
        return ChatMessage(role=MessageRole.ASSISTANT, content=None, tool_calls=[call])


# Read once and shared by every agent (ToolCallingAgent would otherwise parse this YAML per agent).
PROMPT_TEMPLATES = yaml.safe_load(
    importlib.resources.files("smolagents.prompts").joinpath("toolcalling_agent.yaml").read_text()
)


def run_once(model: Model) -> tuple[int, int]:
    """One run; returns the model turns and calc calls that the agent's memory records."""
    agent = ToolCallingAgent(
        tools=[calc], model=model, prompt_templates=PROMPT_TEMPLATES, instructions=INSTRUCTIONS,
        max_steps=2 * TOOL_TURNS, verbosity_level=LogLevel.OFF,
    )
    answer = agent.run(TASK)
    assert str(answer) == str(ANSWER), answer
    steps = [step for step in agent.memory.steps if isinstance(step, ActionStep)]
    calls = sum(1 for step in steps for call in step.tool_calls or [] if call.name == "calc")
    return len(steps), calls


def main():
    runs = parse_arguments(__doc__.splitlines()[0]).runs
    run_once(ScriptedModel())  # warm-up: lazy imports and caches, outside the measurement
    baseline_kb = current_rss_kb()
    parked_kb = 0

    def all_parked():
        nonlocal parked_kb
        parked_kb = current_rss_kb()

    first_turn = threading.Barrier(runs, action=all_parked)
    model = ScriptedModel(first_turn)
    results: list[tuple[int, int]] = []  # list.append is atomic under the GIL

    def worker():
        try:
            results.append(run_once(model))
        except BaseException:
            first_turn.abort()  # wake the parked runs so the failure ends the benchmark
            raise

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(runs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    report(
        runtime="smolagents", version=smolagents.__version__, runs=runs,
        steps=sum(steps for steps, _ in results), tool_calls=sum(calls for _, calls in results),
        seconds=seconds, baseline_kb=baseline_kb, parked_kb=parked_kb,
        concurrency=f"{runs} threads, one per run (smolagents is synchronous; the GIL runs one at a time)",
    )


if __name__ == "__main__":
    main()
