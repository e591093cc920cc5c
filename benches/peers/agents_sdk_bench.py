"""The OpenAI Agents SDK's side of benches/loop_vs_peers.sh: N concurrent `Runner.run`s of one
Agent, each 10 model turns (9 `calc` function calls, then a text answer) against a scripted model
that answers instantly without any network, tracing off. Prints one JSON line (see measure.py for
the fields and how memory is measured).

    python benches/peers/agents_sdk_bench.py --runs 1000   # with the python of benches/peers/setup.sh

All N runs are asyncio tasks on one event loop (asyncio.gather). Seconds are the wall time from
starting the first run to the last one finishing.
"""
import asyncio
import time

from agents import (
    Agent, Model, ModelResponse, ModelTracing, Runner, Usage, __version__, function_tool, set_tracing_disabled,
)
from agents.items import ToolCallOutputItem
from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage, ResponseOutputText

from measure import ANSWER, EXPRESSION, INSTRUCTIONS, TASK, TOOL_TURNS, current_rss_kb, parse_arguments, report


# async, so that the SDK calls it on the event loop: it runs a plain function in a worker thread.
@function_tool
async def calc(expression: str) -> int:
    """Evaluates an arithmetic expression.

    Args:
        expression: the expression, e.g. (17*23)+4
    """
    # Trivial on purpose: the benchmark measures the agent loop. reagent's side runs its real calc
    # component, so any difference in tool cost counts against reagent.
    return ANSWER


class ScriptedModel(Model):
    """Calls calc until the input holds TOOL_TURNS results, then answers. It reads the turn from
    the input the runner sends, so one model serves every run. A run's first turn waits at
    `first_turn` (if given) so that the idle runs can be measured."""

    def __init__(self, first_turn=None):
        self.first_turn = first_turn

    async def get_response(self, system_instructions, input, model_settings, tools, output_schema, handoffs,
                           tracing: ModelTracing, **kwargs) -> ModelResponse:
        turn = 0 if isinstance(input, str) else sum(1 for item in input if item.get("type") == "function_call_output")
        if turn == 0 and self.first_turn is not None:
            await self.first_turn()
        if turn < TOOL_TURNS:
            # A call id per turn: the SDK may skip a call whose id it has already completed.
            item = ResponseFunctionToolCall(type="function_call", id=f"fc_{turn}", call_id=f"call_{turn}",
                                            name="calc", arguments=f'{{"expression": "{EXPRESSION}"}}')
        else:
            text = ResponseOutputText(type="output_text", text=str(ANSWER), annotations=[])
            item = ResponseOutputMessage(type="message", id="msg", role="assistant", status="completed",
                                         content=[text])
        return ModelResponse(output=[item], usage=Usage(), response_id=None)

    def stream_response(self, *args, **kwargs):
        raise NotImplementedError("the benchmark does not stream")


async def run_once(model: Model) -> tuple[int, int]:
    """One run; returns the model turns and calc calls that the run result records."""
    # An Agent per run: runs sharing one Agent check each other's tool lists on every turn, which
    # makes each turn cost O(runs); the SDK's own advice is a separate agent per concurrent run.
    agent = Agent(name="calculator", instructions=INSTRUCTIONS, tools=[calc], model=model)
    result = await Runner.run(agent, TASK, max_turns=2 * TOOL_TURNS)
    assert result.final_output == str(ANSWER), result.final_output
    return len(result.raw_responses), sum(1 for item in result.new_items if isinstance(item, ToolCallOutputItem))


async def main():
    runs = parse_arguments(__doc__.splitlines()[0]).runs
    set_tracing_disabled(True)
    await run_once(ScriptedModel())  # warm-up: lazy imports and caches, outside the measurement
    baseline_kb = current_rss_kb()
    parked_kb = 0
    parked = 0
    all_parked = asyncio.Event()

    async def first_turn():
        nonlocal parked, parked_kb
        parked += 1
        if parked == runs:
            parked_kb = current_rss_kb()
            all_parked.set()
        await all_parked.wait()

    model = ScriptedModel(first_turn)
    started = time.perf_counter()
    results = await asyncio.gather(*(run_once(model) for _ in range(runs)))
    seconds = time.perf_counter() - started
    report(
        runtime="openai-agents", version=__version__, runs=runs,
        steps=sum(steps for steps, _ in results), tool_calls=sum(calls for _, calls in results),
        seconds=seconds, baseline_kb=baseline_kb, parked_kb=parked_kb,
        concurrency=f"{runs} asyncio tasks on one event loop (asyncio.gather)",
    )


if __name__ == "__main__":
    asyncio.run(main())
