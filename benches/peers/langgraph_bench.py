"""LangGraph's side of benches/runs_vs_langgraph.sh: the run shape of reagent's journal benchmark
(10 model turns: 9 `calc` calls, then the answer) as a LangGraph graph (a scripted model node and
the prebuilt ToolNode) under its SQLite checkpointer (langgraph-checkpoint-sqlite, a file in a temp
folder), so that every super-step is checkpointed, as every reagent step is journalled. Runs go
one after another, each on its own thread id. Prints one JSON line.

    python benches/peers/langgraph_bench.py --runs 200   # with the python of benches/peers/setup.sh
"""
import argparse
import json
import sqlite3
import tempfile
import time
from pathlib import Path

import langgraph
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.sqlite import SqliteSaver
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


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=200)
    runs = parser.parse_args().runs
    with tempfile.TemporaryDirectory() as folder:
        connection = sqlite3.connect(str(Path(folder) / "checkpoints.db"), check_same_thread=False)
        graph = StateGraph(MessagesState)
        graph.add_node("model", model)
        graph.add_node("tools", ToolNode([calc]))
        graph.add_edge(START, "model")
        graph.add_conditional_edges("model", tools_condition)
        graph.add_edge("tools", "model")
        app = graph.compile(checkpointer=SqliteSaver(connection))
        steps = 0
        started = time.perf_counter()
        for run in range(runs):
            config = {"configurable": {"thread_id": f"run-{run}"}, "recursion_limit": 100}
            state = app.invoke({"messages": [HumanMessage("What is (17*23)+4?")]}, config)
            steps += sum(1 for m in state["messages"] if isinstance(m, AIMessage))
        seconds = time.perf_counter() - started
    assert steps == runs * STEPS_PER_RUN, steps
    print(json.dumps({
        "runtime": "langgraph",
        "version": getattr(langgraph, "__version__", "1.2.24"),
        "runs": runs,
        "steps": steps,
        "seconds": round(seconds, 3),
        "steps_per_s": round(steps / seconds, 1),
        "checkpointer": "SqliteSaver (langgraph-checkpoint-sqlite 3.1.2), one file",
    }))


if __name__ == "__main__":
    main()
