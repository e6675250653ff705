"""The failure rules, checked against what ComfyUI really sent."""

from jobs.failures import failure_from_execution_error, failure_from_interruption, failure_from_rejection
from tests.conftest import load_trace


def ws_data(trace: str, kind: str) -> dict:
    return next(e["msg"]["data"] for e in load_trace(trace) if e["kind"] == "ws" and e["msg"]["type"] == kind)


def rejections(trace: str) -> list[dict]:
    return [e["response"] for e in load_trace(trace) if e["kind"] == "http" and e["status"] == 400]


def test_node_error_keeps_node_exception_and_traceback():
    failure = failure_from_execution_error(ws_data("node_error.jsonl", "execution_error"))
    assert failure.category == "node_error"
    assert failure.details["exception_type"] == "RuntimeError"
    assert failure.details["node_type"] == "TestSyncError" and failure.details["node_id"] == "2"
    assert "Intentional sync execution error" in failure.message
    assert failure.details["traceback"]


def test_cuda_oom_is_out_of_memory():
    failure = failure_from_execution_error(ws_data("oom.jsonl", "execution_error"))
    assert failure.category == "out_of_memory"
    assert "CUDA out of memory" in failure.details["exception_message"]


def test_interrupt_by_someone_else_is_interrupted():
    assert failure_from_interruption(ws_data("interrupt.jsonl", "execution_interrupted")).category == "interrupted"


def test_validation_rejections_are_classified():
    bad_type, unknown_node, empty = rejections("validation_error.jsonl")[:3]
    assert failure_from_rejection(bad_type, "x").category == "validation"
    assert failure_from_rejection(unknown_node, "x").category == "missing_node"
    assert failure_from_rejection(empty, "x").category == "validation"


def test_checkpoint_not_installed_is_missing_model():
    (body,) = rejections("missing_model.jsonl")
    assert failure_from_rejection(body, "x").category == "missing_model"
