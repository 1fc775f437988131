#!/usr/bin/env python3
"""Issue #3 benchmark: our streaming tracker vs the official SAM 2.1 video predictor (CPU).

Same real frames (../shared/data/cholecseg8k_clip), same random hiera-tiny weights, same
prompts, one run. Three implementations:

* ``official``     sam2 1.1.0 ``SAM2VideoPredictor`` (offline: ``init_state`` loads every
                   frame up front, then ``propagate_in_video``), hole filling off;
* ``ours``         ``InstrumentTracker``, SAM 2.1-like setting (long-term memory off, no
                   hole filling) -- the setting of test/test_tracker_parity.py;
* ``ours_divemem`` ``InstrumentTracker`` with the default DiveMem config (what the node runs).

Measured, each configuration in its own subprocess (so peak RSS is per configuration):

* speed: per (image size, instrument count, implementation): median wall time per tracked
  frame, excluding the prompt frame (frame 0) and 2 warm-up frames. Ours: one ``track()``
  call (preprocessing included). Official: the time between two frames yielded by
  ``propagate_in_video`` (frames are preprocessed by ``init_state``, timed separately);
  official frames are our preprocessed tensors swapped into its state (as
  sam2s_ros/evaluation/sam2_reference.py does), so both see identical pixels.
* RSS growth (one instrument, ``--rss-size``): official on a ``--rss-frames``-long video
  each (its own JPEG loader; the 72 real frames cycled), RSS after propagation; ours:
  RSS after each ``--rss-frames`` count of tracked frames in one process.

Peak RSS is reported twice: ``peak_run`` is the high-water mark since the model was ready
(reset through /proc/self/clear_refs; frames, states and tracking only), ``peak_proc`` the
whole child process (imports and model construction included; the official child also
built our tracker to take its weights).

Nothing is asserted; the targets of issue #3 are printed next to the numbers.

Usage:
    .venv/bin/python benchmarks/bench_tracker.py --out /tmp/bench_tracker.json
    .venv/bin/python benchmarks/bench_tracker.py --quick            # smoke run, ~2 min
    .venv/bin/python benchmarks/bench_tracker.py --sizes 512 --instruments 1 3 --frames 24
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import pathlib
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Optional

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED_DIR = pathlib.Path(os.environ.get("SAM2S_SHARED_DIR", REPO_ROOT.parent / "shared"))
DEFAULT_DATA = SHARED_DIR / "data" / "cholecseg8k_clip"
IMPLS = ("official", "ours", "ours_divemem")
RESULT_TAG = "BENCH_RESULT "
#: tracked frames skipped before timing starts (after the prompt frame)
WARMUP_FRAMES = 2
#: frames per image size when --frames is not given: 512² -> 17 timed frames, 1024² -> 6
DEFAULT_FRAMES = {512: 20, 1024: 9}
QUICK = dict(sizes=[256], instruments=[1, 3], frames=6, rss_frames=[8, 16], rss_size=256)
#: prompts (source pixels, 854x480 frames): a tissue box, and a second click away from the grasper
BOX = (120.0, 60.0, 420.0, 300.0)
OTHER_CLICK = (700.0, 150.0)
#: a frame is "quiet" when other processes used less than this share of all cores meanwhile
QUIET_FRAME_SHARE = 0.10
#: issue #3 targets (reported, never asserted): our / official median time per frame
TARGET_RATIO = {1: 1.0, 3: 0.9}


# ---------------------------------------------------------------------------------------
# measurements inside a child process
# ---------------------------------------------------------------------------------------
def rss_mb() -> float:
    """Current resident set size of this process in MiB."""
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    """High-water RSS of this process in MiB (since start or the last reset_peak_rss)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark (Linux >= 4.0); False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def busy_cpu_s() -> float:
    """CPU seconds all processes have spent busy so far, summed over cores (/proc/stat)."""
    import psutil

    t = psutil.cpu_times()
    return sum(getattr(t, k, 0.0) for k in ("user", "nice", "system", "irq", "softirq", "steal"))


class FrameClock:
    """Per-frame wall time, this process's CPU time, and the share of the machine that
    other processes used meanwhile (0..1 of all cores): a frame with a high share was
    slowed down by them, whichever implementation ran."""

    def __init__(self):
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.others: list[float] = []
        self.start()

    def start(self) -> None:
        self._t, self._c, self._b = time.perf_counter(), time.process_time(), busy_cpu_s()

    def lap(self) -> None:
        """Record the time since start() or the previous lap()."""
        t, c, b = time.perf_counter(), time.process_time(), busy_cpu_s()
        wall, cpu = t - self._t, c - self._c
        self.wall.append(wall)
        self.cpu.append(cpu)
        self.others.append(max(b - self._b - cpu, 0.0) / (max(wall, 1e-9) * (os.cpu_count() or 1)))
        self._t, self._c, self._b = t, c, b


def load_frames(data_dir: pathlib.Path, n: int):
    """``n`` RGB uint8 frames (the clip's frames cycled) and the frame-0 instrument labels."""
    from sam2s_ros.data import read_davis_sequence

    try:
        clip = read_davis_sequence(data_dir, n)
    except Exception as err:  # BagError: no frames there
        raise SystemExit(f"{err} (see --data)") from None
    return [clip.frames[i % len(clip.frames)] for i in range(n)], clip.labels[0]


def make_prompts(gt0, n_instruments: int):
    """Ours and official prompts for frame 0: grasper click, tissue box, another click."""
    import numpy as np

    from sam2s_ros.tracking.types import PromptInput, PromptMode

    ys, xs = np.nonzero(gt0 == 1)  # GT id 1 = the grasper
    grasper = np.array([[xs[len(xs) // 2], ys[len(ys) // 2]]], np.float32)
    one = np.array([1], np.int32)
    official = {
        1: dict(points=grasper, labels=one),
        2: dict(box=np.array(BOX, np.float32)),
        3: dict(points=np.array([OTHER_CLICK], np.float32), labels=one),
    }
    official = {k: v for k, v in official.items() if k <= n_instruments}
    ours = [PromptInput(k, PromptMode.NEW, **v) for k, v in official.items()]
    return ours, official


def tracker_config(impl: str, image_size: int):
    from sam2s_ros.tracking.config import DiveMemConfig, TrackerConfig

    if impl == "ours_divemem":
        return TrackerConfig(model_size="tiny", image_size=image_size, allow_random_weights=True, seed=0)
    return TrackerConfig(
        model_size="tiny",
        image_size=image_size,
        allow_random_weights=True,
        seed=0,
        fill_hole_area=0,
        divemem=DiveMemConfig(long_term_enabled=False),
    )


def build_official(image_size: int):
    """Official video predictor holding the weights of our tracker built with seed 0."""
    from sam2.build_sam import build_sam2_video_predictor

    from sam2s_ros.tracking.tracker import InstrumentTracker

    tracker = InstrumentTracker.from_config(tracker_config("ours", image_size))
    state_dict = tracker.backend.sam.state_dict()
    predictor = build_sam2_video_predictor(
        "configs/sam2.1/sam2.1_hiera_t.yaml",
        ckpt_path=None,
        device="cpu",
        hydra_overrides_extra=[f"++model.image_size={image_size}"],
    )
    predictor.load_state_dict(state_dict)
    predictor.fill_hole_area = 0  # its hole filling needs the CUDA extension
    del tracker, state_dict
    gc.collect()
    return predictor.eval()


def write_jpegs(frames, folder: pathlib.Path) -> None:
    import cv2

    for i, f in enumerate(frames):
        cv2.imwrite(str(folder / f"{i:05d}.jpg"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))


def run_official(job: dict, frames, prompts: dict, checkpoints: list[int]) -> dict:
    """init_state + prompts on frame 0 + propagate_in_video, timing each yielded frame."""
    import torch

    from sam2s_ros.tracking.preprocess import to_model_input

    predictor = build_official(job["size"])
    out = dict(rss_model_mb=rss_mb(), peak_build_mb=peak_rss_mb(), peak_reset=reset_peak_rss())
    rss_at = {}
    with tempfile.TemporaryDirectory(prefix="bench_tracker_") as tmp, torch.inference_mode():
        write_jpegs(frames, pathlib.Path(tmp))
        t0 = time.perf_counter()
        state = predictor.init_state(tmp)  # loads + preprocesses every frame, encodes frame 0
        out["init_state_s"] = time.perf_counter() - t0
        if job["swap_frames"]:  # our preprocessed pixels, exactly what ours sees
            state["images"] = torch.cat([to_model_input(f, job["size"], torch.device("cpu")) for f in frames])
            state["cached_features"] = {}
        out["rss_after_init_mb"] = rss_mb()
        t0 = time.perf_counter()
        for obj_id, kw in sorted(prompts.items()):
            predictor.add_new_points_or_box(state, frame_idx=0, obj_id=obj_id, **kw)
        clock = FrameClock()
        out["prompt_s"] = time.perf_counter() - t0
        for frame_idx, _, logits in predictor.propagate_in_video(state):
            logits = logits[:, 0].float().cpu().numpy()  # as ours returns: numpy logits + binary masks
            _ = logits > 0
            clock.lap()
            if frame_idx + 1 in checkpoints:
                rss_at[frame_idx + 1] = rss_mb()
        out["prompt_s"] += clock.wall[0]  # the first yield is the prompt frame (consolidation only)
    out.update(frame_times_s=clock.wall, frame_cpu_s=clock.cpu, frame_others_share=clock.others, rss_at_mb=rss_at)
    return out


def run_ours(job: dict, frames, prompts: list, checkpoints: list[int]) -> dict:
    """Track frame by frame, prompts on frame 0, timing each track() call."""
    from sam2s_ros.tracking.tracker import InstrumentTracker

    tracker = InstrumentTracker.from_config(tracker_config(job["impl"], job["size"]))
    gc.collect()
    out = dict(rss_model_mb=rss_mb(), peak_build_mb=peak_rss_mb(), peak_reset=reset_peak_rss())
    clock, rss_at, stages = FrameClock(), {}, []
    for i, frame in enumerate(frames):
        clock.start()
        result = tracker.track(frame, prompts if i == 0 else [])
        clock.lap()
        stages.append(result.timings)
        if i == 0 and len(result.instruments) != len(prompts):
            raise RuntimeError(f"prompts rejected: {result.rejected_prompts}")
        if i + 1 in checkpoints:
            rss_at[i + 1] = rss_mb()
    out.update(
        prompt_s=clock.wall[0],
        frame_times_s=clock.wall,
        frame_cpu_s=clock.cpu,
        frame_others_share=clock.others,
        rss_at_mb=rss_at,
        memory_sizes={str(k): v for k, v in tracker.memory_sizes().items()},
        stage_median_s={k: statistics.median(st.get(k, 0.0) for st in stages[1 + WARMUP_FRAMES :]) for k in stages[-1]}
        if len(stages) > 1 + WARMUP_FRAMES
        else {},
    )
    return out


def child_main(job: dict) -> None:
    """Run one configuration and print its result as one tagged JSON line."""
    import torch

    torch.set_num_threads(job["threads"])
    sys.path.insert(0, str(REPO_ROOT))
    frames, gt0 = load_frames(pathlib.Path(job["data"]), job["n_frames"])
    ours_prompts, official_prompts = make_prompts(gt0, job["instruments"])
    checkpoints = job.get("checkpoints", [])
    if job["impl"] == "official":
        res = run_official(job, frames, official_prompts, checkpoints)
    else:
        res = run_ours(job, frames, ours_prompts, checkpoints)
    timed = res["frame_times_s"][1 + WARMUP_FRAMES :]
    timed_cpu = res["frame_cpu_s"][1 + WARMUP_FRAMES :]
    quiet = [t for t, o in zip(timed, res["frame_others_share"][1 + WARMUP_FRAMES :]) if o < QUIET_FRAME_SHARE]
    res.update(
        job,
        timed_frames=len(timed),
        median_s=statistics.median(timed) if timed else None,
        min_s=min(timed) if timed else None,
        median_cpu_s=statistics.median(timed_cpu) if timed_cpu else None,
        quiet_frames=len(quiet),
        median_quiet_s=statistics.median(quiet) if quiet else None,
        peak_run_mb=peak_rss_mb() if res["peak_reset"] else None,
        rss_end_mb=rss_mb(),
    )
    res["peak_proc_mb"] = max(res["peak_build_mb"], peak_rss_mb())
    print(RESULT_TAG + json.dumps(res), flush=True)


# ---------------------------------------------------------------------------------------
# parent: runs children, collects JSON lines, writes --out and prints tables
# ---------------------------------------------------------------------------------------
def wait_until_quiet(max_busy_pct: float, max_wait_s: float) -> float:
    """Wait (at most ``max_wait_s``) until other processes use < ``max_busy_pct`` % of all cores.

    Returns the seconds waited.
    """
    import psutil

    t0 = time.perf_counter()
    while time.perf_counter() - t0 < max_wait_s:
        if psutil.cpu_percent(interval=2.0) < max_busy_pct:
            break
    return time.perf_counter() - t0


def run_child(job: dict, args) -> dict:
    """Run one configuration in a fresh interpreter; adds wall time and the machine's load."""
    env = dict(os.environ, TQDM_DISABLE="1", PYTHONPATH=str(REPO_ROOT))
    waited = wait_until_quiet(args.quiet_cpu, args.quiet_wait) if args.quiet_wait > 0 else 0.0
    load_before = os.getloadavg()[0]
    busy0 = busy_cpu_s()
    own0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(job)], env=env, stdout=subprocess.PIPE, text=True
    )
    wall = time.perf_counter() - t0
    own1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = (own1.ru_utime - own0.ru_utime) + (own1.ru_stime - own0.ru_stime)
    others = max(busy_cpu_s() - busy0 - own, 0.0)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"child {job} failed with exit code {proc.returncode}")
    res = json.loads(lines[-1][len(RESULT_TAG) :])
    # others_cpu_pct: CPU time used by other processes during the run, % of all cores
    res.update(
        wall_s=wall,
        waited_quiet_s=waited,
        load1_before=load_before,
        load1_after=os.getloadavg()[0],
        own_cpu_s=own,
        others_cpu_pct=100.0 * others / (wall * (os.cpu_count() or 1)),
    )
    return res


def plan_jobs(args) -> tuple[list[dict], list[dict]]:
    """Speed jobs (official and ours interleaved per configuration), then RSS jobs."""
    base = dict(threads=args.threads, data=str(args.data))
    speed = []
    for size in args.sizes:
        n = args.frames or DEFAULT_FRAMES.get(size, 12)
        for k in args.instruments:
            for impl in args.impls:
                speed.append(
                    dict(base, kind="speed", impl=impl, size=size, instruments=k, n_frames=n, swap_frames=True)
                )
    rss = []
    counts = sorted(set(args.rss_frames))
    for impl in args.impls if counts else ():
        if impl == "official":  # one video per length: init_state loads them all
            rss += [
                dict(
                    base,
                    kind="rss",
                    impl=impl,
                    size=args.rss_size,
                    instruments=1,
                    n_frames=n,
                    swap_frames=False,
                    checkpoints=counts,
                )
                for n in counts
            ]
        else:  # one stream, RSS read after each count
            rss.append(
                dict(
                    base,
                    kind="rss",
                    impl=impl,
                    size=args.rss_size,
                    instruments=1,
                    n_frames=counts[-1],
                    checkpoints=counts,
                )
            )
    return speed, rss


def fmt(x, spec=".2f") -> str:
    return "–" if x is None else format(x, spec)


def speed_table(rows: list[dict]) -> str:
    """Markdown: median wall time per frame over all timed frames (the issue's metric) and
    over the quiet ones only, each as a ratio to the official predictor; CPU time per frame."""
    head = (
        "| size | instr. | implementation | frames (timed) | median s/frame | vs official "
        "| quiet frames: median s (n) | vs official | target | median CPU s/frame | init_state s "
        "| prompt frame s | peak RSS run / process (MiB) | others' CPU % |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    official = {(r["size"], r["instruments"]): r for r in rows if r["impl"] == "official"}
    lines = []
    for r in rows:
        ref = official.get((r["size"], r["instruments"])) if r["impl"] != "official" else None
        ratio = _ratio(r, ref, "median_s")
        quiet_ratio = _ratio(r, ref, "median_quiet_s")
        target = TARGET_RATIO.get(r["instruments"]) if r["impl"] == "ours" else None
        noisy = ref is not None and not (mostly_quiet(r) and mostly_quiet(ref))
        lines.append(
            f"| {r['size']}² | {r['instruments']} | {r['impl']} | {r['n_frames']} ({r['timed_frames']}) "
            f"| {fmt(r['median_s'], '.3f')} | {_verdict(ratio, None if noisy else target)}{' (noisy)' * noisy} "
            f"| {fmt(r['median_quiet_s'], '.3f')} ({r['quiet_frames']}) | {_verdict(quiet_ratio, target)} "
            f"| {'≤ %.1f×' % target if target else ''} | {fmt(r['median_cpu_s'], '.3f')} "
            f"| {fmt(r.get('init_state_s'))} | {fmt(r['prompt_s'])} "
            f"| {fmt(r['peak_run_mb'], '.0f')} / {fmt(r['peak_proc_mb'], '.0f')} | {r['others_cpu_pct']:.0f} |"
        )
    return head + "\n".join(lines) + "\n"


def mostly_quiet(row: dict) -> bool:
    """At least half of the timed frames ran while other processes left the cores alone."""
    return row["timed_frames"] > 0 and 2 * row["quiet_frames"] >= row["timed_frames"]


def _ratio(row: dict, ref: Optional[dict], key: str) -> Optional[float]:
    if key == "median_quiet_s" and not (ref and mostly_quiet(row) and mostly_quiet(ref)):
        return None  # a median over a few quiet frames (often the cheap early ones) is not comparable
    return row[key] / ref[key] if ref and row.get(key) and ref.get(key) else None


def _verdict(ratio: Optional[float], target: Optional[float]) -> str:
    if ratio is None:
        return "–"
    return f"{ratio:.2f}×" + ("" if target is None else (" ✓" if ratio <= target else " ✗"))


def rss_table(rows: list[dict], counts: list[int]) -> str:
    cols = " | ".join(f"RSS after {n} (MiB)" for n in counts)
    head = (
        f"| implementation | video frames | {cols} | growth per frame (MiB) | peak RSS run (MiB) "
        "| median s/frame (quiet frames) | others' CPU % |\n"
        "|---|---|" + "---|" * len(counts) + "---|---|---|---|\n"
    )
    lines = []
    by_impl: dict[str, dict[int, float]] = {}
    for r in rows:
        at = {int(k): v for k, v in r["rss_at_mb"].items()}
        if r["impl"] == "official":  # the figure for a video of n frames is the RSS after propagating it all
            by_impl.setdefault("official", {})[r["n_frames"]] = at[r["n_frames"]]
        else:
            by_impl[r["impl"]] = at
        cells = " | ".join(fmt(at.get(n), ".0f") for n in counts)
        lines.append(
            f"| {r['impl']} | {r['n_frames']} | {cells} | | {fmt(r['peak_run_mb'], '.0f')} "
            f"| {fmt(r['median_s'], '.3f')} ({r['quiet_frames']}/{r['timed_frames']}) "
            f"| {r['others_cpu_pct']:.0f} |"
        )
    for impl, at in by_impl.items():
        if len(counts) >= 2 and counts[0] in at and counts[-1] in at:
            slope = (at[counts[-1]] - at[counts[0]]) / (counts[-1] - counts[0])
            how = "separate videos" if impl == "official" else "one stream"
            lines.append(
                f"| **{impl}** growth {counts[0]}→{counts[-1]} ({how}) | | "
                + " | ".join(fmt(at.get(n), ".0f") for n in counts)
                + f" | **{slope:.2f}** | | | |"
            )
    return head + "\n".join(lines) + "\n"


def machine_info() -> dict:
    import torch

    model = ""
    try:
        model = next(
            ln.split(":", 1)[1].strip()
            for ln in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()
            if ln.startswith("Model name")
        )
    except (OSError, StopIteration):
        pass
    try:
        from importlib.metadata import version

        sam2_version = version("sam2")
    except Exception:  # noqa: BLE001 - only informative
        sam2_version = "?"
    return dict(
        date=datetime.datetime.now().isoformat(timespec="seconds"),
        machine=platform.machine(),
        cpu=model,
        cores=os.cpu_count(),
        torch=torch.__version__,
        sam2=sam2_version,
        python=platform.python_version(),
    )


def parse_args(argv: Optional[list[str]] = None):
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sizes", type=int, nargs="+", help="model input sizes [512 1024]")
    p.add_argument("--instruments", type=int, nargs="+", choices=(1, 2, 3), help="instrument counts [1 3]")
    p.add_argument(
        "--frames",
        type=int,
        help=f"frames per speed run incl. the prompt frame and {WARMUP_FRAMES} warm-up frames [{DEFAULT_FRAMES}]",
    )
    p.add_argument(
        "--rss-frames", type=int, nargs="*", help="frame counts for the RSS-growth runs [50 300]; none to skip them"
    )
    p.add_argument("--rss-size", type=int, help="model input size of the RSS-growth runs [512]")
    p.add_argument("--impls", nargs="+", choices=IMPLS, default=list(IMPLS), help="implementations [all]")
    p.add_argument("--threads", type=int, default=2, help="torch threads [2]")
    p.add_argument("--data", type=pathlib.Path, default=DEFAULT_DATA, help=f"clip folder [{DEFAULT_DATA}]")
    p.add_argument(
        "--quiet-cpu",
        type=float,
        default=25.0,
        help="before each configuration wait until other processes use less than this %% of all cores [25] ...",
    )
    p.add_argument(
        "--quiet-wait", type=float, default=30.0, help="... but at most this many seconds; 0: never wait [30]"
    )
    p.add_argument(
        "--retries",
        type=int,
        default=1,
        help="run a speed configuration again (at most this "
        "many times) when fewer than half of its timed frames were quiet; the quieter attempt is kept [1]",
    )
    p.add_argument("--out", type=pathlib.Path, help="write all results to this JSON file")
    p.add_argument("--quick", action="store_true", help=f"smoke run: defaults become {QUICK}")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    defaults = (
        QUICK
        if args.quick
        else dict(sizes=[512, 1024], instruments=[1, 3], frames=None, rss_frames=[50, 300], rss_size=512)
    )
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.frames is not None and args.frames < 2 + WARMUP_FRAMES:
        p.error(f"--frames must be >= {2 + WARMUP_FRAMES} (prompt frame + {WARMUP_FRAMES} warm-up + 1 timed)")
    return args


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    if args.child:
        child_main(json.loads(args.child))
        return 0
    if not (args.data / "frames").is_dir():
        print(f"no clip at {args.data} (see --data / SAM2S_SHARED_DIR)", file=sys.stderr)
        return 2
    speed_jobs, rss_jobs = plan_jobs(args)
    meta = dict(
        machine_info(),
        args={k: (str(v) if isinstance(v, pathlib.Path) else v) for k, v in vars(args).items() if k != "child"},
        load_before=os.getloadavg(),
    )
    results: dict = dict(meta=meta, speed=[], rss=[])
    t_start = time.perf_counter()
    for kind, jobs in (("speed", speed_jobs), ("rss", rss_jobs)):
        for i, job in enumerate(jobs):
            print(
                f"[{time.perf_counter() - t_start:6.0f} s] {kind} {i + 1}/{len(jobs)}: {job['impl']} "
                f"{job['size']}² x{job['instruments']} {job['n_frames']} frames",
                file=sys.stderr,
                flush=True,
            )
            res = run_child(job, args)
            for attempt in range(2, args.retries + 2 if kind == "speed" else 0):
                if mostly_quiet(res):
                    break
                print(
                    f"           {res['quiet_frames']}/{res['timed_frames']} frames quiet: attempt {attempt}",
                    file=sys.stderr,
                    flush=True,
                )
                again = run_child(job, args)
                res = max((res, again), key=lambda r: (r["quiet_frames"], -r["median_s"]))
                res["attempts"] = attempt
            results[kind].append(res)
            if args.out:  # partial results survive an interrupted run
                args.out.write_text(json.dumps(results, indent=1))
    rows = results["speed"] + results["rss"]
    meta.update(
        load_after=os.getloadavg(),
        total_s=time.perf_counter() - t_start,
        others_cpu_pct_mean=statistics.mean(r["others_cpu_pct"] for r in rows) if rows else None,
    )
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))
    print(
        f"\n{meta['date']}, {meta['machine']} {meta['cpu']} ({meta['cores']} cores), torch {meta['torch']}, "
        f"sam2 {meta['sam2']}, {args.threads} threads; load average before {meta['load_before'][0]:.2f}, "
        f"after {meta['load_after'][0]:.2f}; other processes used {fmt(meta['others_cpu_pct_mean'], '.0f')} % of "
        f"the cores on average; total {meta['total_s'] / 60:.1f} min\n"
    )
    if results["speed"]:
        print(speed_table(results["speed"]))
    if results["rss"]:
        print(rss_table(results["rss"], sorted(set(args.rss_frames))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
