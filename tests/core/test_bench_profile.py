"""``shadowline bench worker --profile`` says where the worker's time goes in every one of its threads."""

from __future__ import annotations

from core.bench import WORKER_STAGES, _worker_round


def test_the_profile_counts_the_stages_the_worker_runs_in_its_thread_pools(shipped_model_dir) -> None:
    # Two phones at once: decoding, inference and writing run in the worker's pools, not the calling
    # thread, which a plain cProfile saw alone (every stage but the claim read 0.000).
    result = _worker_round(str(shipped_model_dir), 12, 2, "worker", True)
    stages = result["stages_s"]
    assert set(WORKER_STAGES) <= set(stages)
    for stage in ("decode (read_image)", "input metrics", "detector (ONNX, NMS)", "write (requeue_stale + record_results)"):
        assert stages[stage] > 0, (stage, stages)
    assert stages["detector (ONNX, NMS)"] > stages["decode (read_image)"]
    # The pools are themselves again afterwards.
    from concurrent.futures import thread

    assert thread._WorkItem.run.__qualname__ == "_WorkItem.run"
