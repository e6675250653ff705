"""How good the learned ETA is: replayed simulated runs with known node durations.

    cd /work/main && .venv/bin/python manage.py eta_accuracy            # seed 7, 400 training, 300 held-out runs
    cd /work/main && .venv/bin/python manage.py eta_accuracy --seed 11 --train 800 --test 500

Runs are generated, not executed: image workflows (checkpoint loader, two text encodes, empty
latent, KSampler with N steps at a per-step cost that grows with pixels, VAE decode, save) and
video workflows (UNET/CLIP/VAE loaders, T5-sized text encodes, a long sampler whose steps grow
with pixels x latent frames, a decode that grows with frames, video combine). Durations are drawn
with lognormal noise per node and per run, a speed factor per backend, occasional slow runs
(contention, throttling), and loaders served from ComfyUI's cache in some runs.

The model learns from the training runs' node timings (the same `TimingHistory` that
`node_estimates` builds from the database), then each held-out run is replayed: at 10%, 25% and
50% of its true duration we take the state a tracker would see (finished nodes, current node,
steps reported so far, time in the current node) and compare three predicted totals with the
true one:
- learned: elapsed + `remaining_seconds(...)`;
- naive: elapsed / fraction, the equal-weight node/step fraction a naive tool shows;
- weighted: elapsed / fraction with the learned `node_weights` (the progress bar's own fraction).
Medians are over the runs where all three give an answer (the naive fraction is 0 before the
first node finishes). Some held-out runs use workflow variants absent from training, so their
estimates come from the fallbacks (cost signature, class), not the fingerprint.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass, field
from typing import Any

from jobs.eta import (
    NodeEstimate,
    TimingHistory,
    TimingSample,
    estimates_from_history,
    node_cost,
    node_weights,
    remaining_seconds,
    workflow_fingerprint,
)

CHECKPOINTS = (0.10, 0.25, 0.50)
BACKEND_SPEED = {"gpu-a": 1.0, "gpu-b": 1.7}
SLOW_RUN_PROBABILITY = 0.08
LOADER_CACHED_PROBABILITY = 0.5
UNSEEN_TEST_SHARE = 0.2
VIDEO_SHARE = 0.3
REFERENCE_PIXELS = 512 * 512


@dataclass(frozen=True)
class Variant:
    shape: str  # "image" | "video"
    width: int
    height: int
    steps: int
    frames: int = 1
    batch: int = 1

    @property
    def pixel_ratio(self) -> float:
        return self.width * self.height / REFERENCE_PIXELS

    @property
    def latent_frames(self) -> int:
        # Video VAEs compress time 4x: 33 frames are 9 latent frames.
        return (self.frames - 1) // 4 + 1 if self.shape == "video" else 1


IMAGE_SIZES = [(512, 512), (512, 768), (768, 768), (1024, 1024), (832, 1216)]
VIDEO_SIZES = [(480, 832), (720, 1280)]
SEEN_VARIANTS = [
    *(Variant("image", w, h, steps) for w, h in IMAGE_SIZES for steps in (20, 30) if (w, h, steps) != (512, 768, 20)),
    Variant("image", 512, 512, 20, batch=4),
    *(Variant("video", w, h, steps, frames) for w, h in VIDEO_SIZES for frames in (33, 81) for steps in (20, 30)),
]
# Never trained on: their fingerprints have no history, some node signatures neither.
UNSEEN_VARIANTS = [
    Variant("image", 512, 768, 20),
    Variant("image", 1024, 1024, 25),
    Variant("video", 480, 832, 20, 49),
    Variant("video", 720, 1280, 30, 49),
]


# --- workflows ----------------------------------------------------------------------------------


def _image_graph(variant: Variant, rng: random.Random) -> dict[str, tuple[str, dict[str, Any]]]:
    checkpoint = "sd_xl_base_1.0.safetensors" if variant.pixel_ratio > 2.5 else "v1-5-pruned-emaonly.safetensors"
    return {
        "loader": ("CheckpointLoaderSimple", {"ckpt_name": checkpoint}),
        "positive": ("CLIPTextEncode", {"text": f"a castle, take {rng.randrange(10**6)}", "clip": ["loader", 1]}),
        "negative": ("CLIPTextEncode", {"text": "blurry", "clip": ["loader", 1]}),
        "latent": ("EmptyLatentImage", {"width": variant.width, "height": variant.height, "batch_size": variant.batch}),
        "sampler": ("KSampler", {
            "seed": rng.randrange(2**32), "steps": variant.steps, "cfg": 7.0, "sampler_name": "euler",
            "scheduler": "normal", "denoise": 1.0, "model": ["loader", 0], "positive": ["positive", 0],
            "negative": ["negative", 0], "latent_image": ["latent", 0],
        }),
        "decode": ("VAEDecode", {"samples": ["sampler", 0], "vae": ["loader", 2]}),
        "save": ("SaveImage", {"images": ["decode", 0], "filename_prefix": f"shot{rng.randrange(1000)}"}),
    }  # fmt: skip


def _video_graph(variant: Variant, rng: random.Random) -> dict[str, tuple[str, dict[str, Any]]]:
    return {
        "unet": ("UNETLoader", {"unet_name": "wan2.1_t2v_14B_fp8.safetensors", "weight_dtype": "default"}),
        "clip": ("CLIPLoader", {"clip_name": "umt5_xxl_fp8.safetensors", "type": "wan"}),
        "vae": ("VAELoader", {"vae_name": "wan_2.1_vae.safetensors"}),
        "positive": ("CLIPTextEncode", {"text": f"a dragon flies, take {rng.randrange(10**6)}", "clip": ["clip", 0]}),
        "negative": ("CLIPTextEncode", {"text": "static, blurry", "clip": ["clip", 0]}),
        "latent": ("EmptyHunyuanLatentVideo", {
            "width": variant.width, "height": variant.height, "length": variant.frames, "batch_size": variant.batch,
        }),
        "sampler": ("KSampler", {
            "seed": rng.randrange(2**32), "steps": variant.steps, "cfg": 6.0, "sampler_name": "uni_pc",
            "scheduler": "simple", "denoise": 1.0, "model": ["unet", 0], "positive": ["positive", 0],
            "negative": ["negative", 0], "latent_image": ["latent", 0],
        }),
        "decode": ("VAEDecode", {"samples": ["sampler", 0], "vae": ["vae", 0]}),
        "combine": ("VHS_VideoCombine", {"images": ["decode", 0], "frame_rate": 16, "filename_prefix": "clip"}),
    }  # fmt: skip


def _numbered(
    graph: dict[str, tuple[str, dict[str, Any]]], rng: random.Random
) -> tuple[dict[str, Any], dict[str, str]]:
    """The graph in API format under arbitrary node ids, as different exports number them."""
    first = rng.choice([1, 3, 10, 40])
    ids = {role: str(first + i) for i, role in enumerate(rng.sample(list(graph), len(graph)))}
    workflow = {}
    for role, (class_type, inputs) in graph.items():
        renamed = {k: [ids[v[0]], v[1]] if isinstance(v, list) else v for k, v in inputs.items()}
        workflow[ids[role]] = {"class_type": class_type, "inputs": renamed}
    return workflow, ids


# --- true durations -----------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeRun:
    node_id: str
    class_type: str
    started: float
    finished: float
    steps: int | None = None
    step_times: tuple[float, ...] = ()  # when each step was reported, 1..steps


@dataclass(frozen=True)
class SimulatedRun:
    backend: str
    variant: Variant
    workflow: dict[str, Any]
    cached: frozenset[str]
    nodes: tuple[NodeRun, ...]  # in execution order
    seen: bool

    @property
    def total(self) -> float:
        return self.nodes[-1].finished


@dataclass
class _RunConditions:
    variant: Variant
    gpu: float  # backend speed x this run's own factor: what GPU-bound work is slowed by
    rng: random.Random

    def noise(self, sigma: float = 0.12) -> float:
        return self.rng.lognormvariate(0.0, sigma)


def _sampler_step_seconds(c: _RunConditions) -> float:
    v = c.variant
    base = 0.22 * v.latent_frames if v.shape == "video" else 0.055
    # Attention makes a step grow a little faster than the pixel count.
    return base * v.pixel_ratio**1.1 * v.batch * c.gpu * c.noise(0.05)


def _plain_seconds(role: str, c: _RunConditions) -> float:
    v = c.variant
    video = v.shape == "video"
    seconds = {
        "loader": (5.0 if v.pixel_ratio > 2.5 else 2.0) * c.noise(0.3),  # disk, not GPU
        "unet": 12.0 * c.noise(0.3),
        "clip": 6.0 * c.noise(0.3),
        "vae": 0.8 * c.noise(0.3),
        "positive": (1.2 if video else 0.08) * c.gpu * c.noise(),
        "negative": (1.2 if video else 0.08) * c.gpu * c.noise(),
        "latent": 0.01 * c.noise(),
        "decode": (0.5 * v.latent_frames if video else 0.05 * v.batch) * v.pixel_ratio * c.gpu * c.noise(),
        "save": (0.08 + 0.04 * v.pixel_ratio) * v.batch * c.noise(),
        "combine": 0.015 * v.frames * v.pixel_ratio * c.noise(),
    }
    return seconds[role]


def _node_run(role: str, node_id: str, class_type: str, start: float, c: _RunConditions) -> NodeRun:
    if role != "sampler":
        return NodeRun(node_id, class_type, start, start + _plain_seconds(role, c))
    # Set-up before the first step (model to GPU, conditioning), then the steps one by one.
    clock = start + (2.0 if c.variant.shape == "video" else 0.3) * c.gpu * c.noise()
    per_step = _sampler_step_seconds(c)
    step_times = []
    for _ in range(c.variant.steps):
        clock += per_step * c.noise(0.03)
        step_times.append(clock)
    return NodeRun(node_id, class_type, start, clock, c.variant.steps, tuple(step_times))


def simulate_run(variant: Variant, backend: str, rng: random.Random, *, seen: bool) -> SimulatedRun:
    graph = (_video_graph if variant.shape == "video" else _image_graph)(variant, rng)
    workflow, ids = _numbered(graph, rng)
    run_factor = rng.lognormvariate(0.0, 0.07)
    if rng.random() < SLOW_RUN_PROBABILITY:
        run_factor *= rng.uniform(1.5, 2.5)
    conditions = _RunConditions(variant, BACKEND_SPEED[backend] * run_factor, rng)
    # The previous prompt on this backend loaded the same model: ComfyUI serves it from cache.
    loaders = {"loader", "unet", "clip", "vae", "latent"}
    cached = {role for role in graph if role in loaders and rng.random() < LOADER_CACHED_PROBABILITY}
    clock = 0.0
    nodes = []
    for role, (class_type, _) in graph.items():
        if role in cached:
            continue
        node = _node_run(role, ids[role], class_type, clock, conditions)
        nodes.append(node)
        clock = node.finished + 0.002  # ComfyUI's own bookkeeping between nodes
    return SimulatedRun(backend, variant, workflow, frozenset(ids[r] for r in cached), tuple(nodes), seen)


def simulated_runs(rng: random.Random, count: int, *, unseen_share: float = 0.0) -> list[SimulatedRun]:
    runs = []
    for _ in range(count):
        seen = rng.random() >= unseen_share
        pool = SEEN_VARIANTS if seen else UNSEEN_VARIANTS
        shape = "video" if rng.random() < VIDEO_SHARE else "image"
        variant = rng.choice([v for v in pool if v.shape == shape])
        runs.append(simulate_run(variant, rng.choice(sorted(BACKEND_SPEED)), rng, seen=seen))
    return runs


def training_history(runs: list[SimulatedRun]) -> TimingHistory:
    """What the tracker would have written as NodeTiming rows for these runs, in order."""
    samples = []
    for index, run in enumerate(runs):
        fingerprint = workflow_fingerprint(run.workflow)
        for node in run.nodes:
            cost = node_cost(run.workflow, node.node_id)
            samples.append(
                TimingSample(
                    class_type=node.class_type, backend=run.backend, fingerprint=fingerprint, cost_key=cost.key,
                    work=cost.work, duration=node.finished - node.started, steps=node.steps,
                    finished_at=index * 1e5 + node.finished,
                )
            )  # fmt: skip
    return TimingHistory(samples)


# --- replay -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunState:
    """What the tracker knows at one moment of a run."""

    done: frozenset[str]
    current_node: str | None
    step_value: float | None
    step_max: float | None
    current_started_seconds_ago: float | None


def state_at(run: SimulatedRun, t: float) -> RunState:
    done = frozenset(n.node_id for n in run.nodes if n.finished <= t)
    current = next((n for n in run.nodes if n.started <= t < n.finished), None)
    if current is None:
        return RunState(done, None, None, None, None)
    reported = sum(1 for at in current.step_times if at <= t)
    # ComfyUI sends no progress before the first step, so value and max are unknown until then.
    step_value, step_max = (float(reported), float(current.steps)) if reported and current.steps else (None, None)
    return RunState(done, current.node_id, step_value, step_max, t - current.started)


def progress_fraction(weights: dict[str, float], run: SimulatedRun, state: RunState) -> float:
    """The progress bar: weighted finished nodes plus the current node's step fraction."""
    to_do = set(run.workflow) - run.cached
    total = sum(weights[n] for n in to_do)
    finished = sum(weights[n] for n in state.done & to_do)
    current = 0.0
    if state.current_node is not None and state.step_max and state.step_value is not None:
        current = weights[state.current_node] * state.step_value / state.step_max
    return (finished + current) / total if total else 0.0


@dataclass(frozen=True)
class Prediction:
    learned: float | None
    naive: float | None
    weighted: float | None


def predict_totals(run: SimulatedRun, estimates: dict[str, NodeEstimate], t: float) -> Prediction:
    state = state_at(run, t)
    remaining = remaining_seconds(
        estimates,
        to_run=set(run.workflow),
        done=set(state.done),
        cached=set(run.cached),
        current_node=state.current_node,
        step_value=state.step_value,
        step_max=state.step_max,
        current_started_seconds_ago=state.current_started_seconds_ago,
    )
    naive = progress_fraction({n: 1.0 for n in run.workflow}, run, state)
    weighted = progress_fraction(node_weights(estimates), run, state)
    return Prediction(
        learned=t + remaining if remaining is not None else None,
        naive=t / naive if naive > 0 else None,
        weighted=t / weighted if weighted > 0 else None,
    )


# --- the report ---------------------------------------------------------------------------------


@dataclass
class CheckpointErrors:
    learned: list[float] = field(default_factory=list)
    naive: list[float] = field(default_factory=list)
    weighted: list[float] = field(default_factory=list)
    # The learned ETA on every run, including those where the naive one has no answer yet.
    learned_every_run: list[float] = field(default_factory=list)
    runs_total: int = 0

    @property
    def runs(self) -> int:
        return len(self.learned)

    def median(self, method: str) -> float | None:
        values = getattr(self, method)
        return statistics.median(values) if values else None


@dataclass
class AccuracyReport:
    seed: int
    train_runs: int
    test_runs: int
    # (group, checkpoint) -> errors; groups: "all", "image", "video", "seen", "unseen"
    errors: dict[tuple[str, float], CheckpointErrors]

    def median(self, group: str, checkpoint: float, method: str) -> float | None:
        return self.errors[(group, checkpoint)].median(method)


GROUPS = ("all", "image", "video", "seen workflow", "unseen workflow")


def _groups_of(run: SimulatedRun) -> tuple[str, ...]:
    return ("all", run.variant.shape, "seen workflow" if run.seen else "unseen workflow")


def eta_accuracy(*, seed: int = 7, train: int = 400, test: int = 300) -> AccuracyReport:
    rng = random.Random(seed)
    history = training_history(simulated_runs(rng, train))
    held_out = simulated_runs(rng, test, unseen_share=UNSEEN_TEST_SHARE)
    errors = {(g, c): CheckpointErrors() for g in GROUPS for c in CHECKPOINTS}
    for run in held_out:
        estimates = estimates_from_history(history, backend=run.backend, workflow=run.workflow, nodes=set(run.workflow))
        for checkpoint in CHECKPOINTS:
            prediction = predict_totals(run, estimates, checkpoint * run.total)
            for group in _groups_of(run):
                _record(errors[(group, checkpoint)], prediction, run.total)
    return AccuracyReport(seed, train, test, errors)


def _record(errors: CheckpointErrors, prediction: Prediction, true_total: float) -> None:
    errors.runs_total += 1
    if prediction.learned is not None:
        errors.learned_every_run.append(abs(prediction.learned - true_total) / true_total)
    if prediction.learned is None or prediction.naive is None or prediction.weighted is None:
        return
    errors.learned.append(abs(prediction.learned - true_total) / true_total)
    errors.naive.append(abs(prediction.naive - true_total) / true_total)
    errors.weighted.append(abs(prediction.weighted - true_total) / true_total)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def format_report(report: AccuracyReport) -> str:
    lines = [
        "ETA accuracy: median relative error of the predicted total run time, |predicted - true| / true",
        f"seed {report.seed}; trained on {report.train_runs} simulated runs, "
        f"tested on {report.test_runs} held-out runs",
        "learned = elapsed + remaining_seconds(); naive = elapsed / equal-weight node+step fraction;",
        "weighted = elapsed / fraction weighted by the learned node_weights(). An estimate, all of them.",
        "",
        f"{'':<23}{'runs where all answer':^35} | {'every run':^15}",
        f"{'runs':<17} {'at':>4} {'n':>5} {'learned':>9} {'naive':>9} {'weighted':>9} | {'n':>5} {'learned':>9}",
    ]
    for group in GROUPS:
        for checkpoint in CHECKPOINTS:
            e = report.errors[(group, checkpoint)]
            lines.append(
                f"{group:<17} {checkpoint * 100:>3.0f}% {e.runs:>5} {_percent(e.median('learned')):>9} "
                f"{_percent(e.median('naive')):>9} {_percent(e.median('weighted')):>9} | "
                f"{e.runs_total:>5} {_percent(e.median('learned_every_run')):>9}"
            )
    lines.append("")
    lines.append("The naive and weighted fractions are 0 until a node finishes or a step is reported: runs")
    lines.append("still loading their model at that point have no naive answer and are left out on the left.")
    return "\n".join(lines)
