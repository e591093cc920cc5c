"""LangGraph's side of benches/runs_vs_langgraph.sh: the run shape of reagent's journal benchmark
(10 model turns: 9 `calc` calls, then the answer) as a LangGraph graph (a scripted model node and
the prebuilt ToolNode) under its SQLite checkpointer (langgraph-checkpoint-sqlite, a file in a temp
folder), so that every super-step is checkpointed, as every reagent step is journalled. Runs go
one after another (`invoke`, SqliteSaver), or N at a time (`--at-once N`: `ainvoke` on asyncio,
AsyncSqliteSaver), each on its own thread id. Prints one JSON line.

    python benches/peers/langgraph_bench.py --runs 200 [--at-once 50]   # the python of benches/peers/setup.sh
"""
import argparse
import asyncio
import json
import sqlite3
import tempfile
import time
from pathlib import Path

import langgraph
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

EXPRESSIONS = ["(17*23)+4", "4+(17*23)", "(23*17)+4", "4+(23*17)", "17*23+4", "4+17*23", "23*17+4", "4+23*17", "(17*23+4)"]
STEPS_PER_RUN = len(EXPRESSIONS) + 1


@tool
def calc(expression: str) -> int:
    """Evaluates an arithmetic expression."""
    # Trivial on purpose: reagent's side runs its real calc component.
    return 395


def model(state: MessagesState):
    """Scripted: calls calc until the conversation holds nine results, then answers."""
    done = sum(1 for m in state["messages"] if isinstance(m, ToolMessage))
    if done < len(EXPRESSIONS):
        call = {"name": "calc", "args": {"expression": EXPRESSIONS[done]}, "id": f"call_{done}", "type": "tool_call"}
        return {"messages": [AIMessage(content="", tool_calls=[call])]}
    return {"messages": [AIMessage(content="(17*23)+4 = 395.")]}


def graph():
    built = StateGraph(MessagesState)
    built.add_node("model", model)
    built.add_node("tools", ToolNode([calc]))
    built.add_edge(START, "model")
    built.add_conditional_edges("model", tools_condition)
    built.add_edge("tools", "model")
    return built


def config(run):
    return {"configurable": {"thread_id": f"run-{run}"}, "recursion_limit": 100}


def task():
    return {"messages": [HumanMessage("What is (17*23)+4?")]}


def model_turns(state):
    return sum(1 for m in state["messages"] if isinstance(m, AIMessage))


def one_at_a_time(path, runs):
    connection = sqlite3.connect(path, check_same_thread=False)
    app = graph().compile(checkpointer=SqliteSaver(connection))
    return sum(model_turns(app.invoke(task(), config(run))) for run in range(runs))


async def many_at_once(path, runs, at_once):
    async with AsyncSqliteSaver.from_conn_string(path) as saver:
        app = graph().compile(checkpointer=saver)
        gate = asyncio.Semaphore(at_once)

        async def one(run):
            async with gate:
                return model_turns(await app.ainvoke(task(), config(run)))

        return sum(await asyncio.gather(*(one(run) for run in range(runs))))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--at-once", type=int, default=1)
    args = parser.parse_args()
    runs, at_once = args.runs, args.at_once
    with tempfile.TemporaryDirectory() as folder:
        path = str(Path(folder) / "checkpoints.db")
        started = time.perf_counter()
        if at_once == 1:
            steps = one_at_a_time(path, runs)
        else:
            steps = asyncio.run(many_at_once(path, runs, at_once))
        seconds = time.perf_counter() - started
    assert steps == runs * STEPS_PER_RUN, steps
    print(json.dumps({
        "runtime": "langgraph",
        "version": getattr(langgraph, "__version__", "1.2.24"),
        "runs": runs,
        "at_once": at_once,
        "steps": steps,
        "seconds": round(seconds, 3),
        "steps_per_s": round(steps / seconds, 1),
        "checkpointer": ("SqliteSaver" if at_once == 1 else "AsyncSqliteSaver")
        + " (langgraph-checkpoint-sqlite 3.1.2), one file",
    }))


if __name__ == "__main__":
    main()
