"""The training loop: what a step changes, resume, DDP equivalence, shared DiveMem, learning."""

from __future__ import annotations

import os
import socket
import time

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from sam2s_ros.tracking import memory_bank
from sam2s_ros.training import unroll
from sam2s_ros.training.config import DataConfig, MemoryConfig, OptimConfig, PromptConfig, SourceConfig, TrainConfig
from sam2s_ros.training.trainer import Trainer

pytestmark = pytest.mark.shared_data


def small_config(shared_dir, out_dir, **kw) -> TrainConfig:
    """A sam2s_mobile config on 10 frames of one real DAVIS sequence at 128² (fast on CPU)."""
    data = DataConfig(
        sources=[
            SourceConfig(path=str(shared_dir / "data" / "davis2016_train"), sequences=["dog"], licence="CC BY 4.0")
        ],
        clip_frames=4,
        far_frames=1,
        max_frames_per_sequence=kw.pop("max_frames", 10),
    )
    base = dict(
        model_size="sam2s_mobile",
        image_size=128,
        init="random",
        freeze=["image_encoder"],
        feature_cache=str(out_dir / "cache"),
        out_dir=str(out_dir / "run"),
        steps=2,
        batch_size=1,
        num_threads=1,
        log_every=1,
        ckpt_every=0,
        data=data,
        prompts=PromptConfig(prob_points=1.0, clicks_per_correction=1),
        memory=MemoryConfig(num_maskmem=3, candidate_pool_size=1),
        optim=OptimConfig(warmup_steps=1),
    )
    base.update(kw)
    return TrainConfig(**base)


def _params(module):
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def test_one_step_changes_exactly_the_trainable_parameters(shared_dir, tmp_path):
    tr = Trainer(small_config(shared_dir, tmp_path), progress=False)
    tr.cache.fill(tr.train_seqs, progress=False)
    before = _params(tr.model)
    trainable = {k for k, p in tr.model.named_parameters() if p.requires_grad}
    tr.train_step()
    after = _params(tr.model)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    frozen = set(before) - trainable
    assert frozen, "the image encoder should be frozen"
    assert all(k.startswith("sam.image_encoder.") for k in frozen)
    assert not (changed & frozen), f"frozen parameters changed: {sorted(changed & frozen)[:5]}"
    # the readout memory (sam2s_ros.model.readout) has no memory-attention weights, and no loss
    # reads the object pointers of a model without a semantic head
    for prefix in ("sam.memory_encoder.", "sam.sam_mask_decoder.transformer."):
        module = {k for k in trainable if k.startswith(prefix)}
        assert module, f"no trainable parameters under {prefix}"
        assert module <= changed, f"{prefix}: {sorted(module - changed)[:5]} did not change"


def test_readout_keys_are_fitted_on_the_training_frames(shared_dir, tmp_path):
    tr = Trainer(small_config(shared_dir, tmp_path), progress=False)
    tr.cache.fill(tr.train_seqs, progress=False)
    before = tr.sam.memory_encoder.out_proj.weight.detach().clone()
    info = tr.fit_readout_keys()
    assert info["frames"] == 4  # every 3rd of 10 frames
    assert info["cells"] == 4 * 8 * 8
    assert 0.5 < info["variance_kept"] <= 1.0
    assert not torch.equal(before, tr.sam.memory_encoder.out_proj.weight)
    kept = Trainer(small_config(shared_dir, tmp_path / "keep", readout_keys="keep"), progress=False)
    assert kept.fit_readout_keys() is None


def test_resume_equals_an_uninterrupted_run(shared_dir, tmp_path):
    full = Trainer(small_config(shared_dir, tmp_path / "a", steps=4), progress=False)
    full.run()
    part = Trainer(small_config(shared_dir, tmp_path / "b", steps=4), progress=False)
    part.cache.fill(part.train_seqs, progress=False)
    part.fit_readout_keys()  # what run() does before the first step
    part.train_step()
    part.train_step()
    part.save_checkpoint()  # as if the process had been killed after step 2
    resumed = Trainer(small_config(shared_dir, tmp_path / "b", steps=4), progress=False)
    resumed.run()
    assert [r["step"] for r in resumed.history] == [1, 2, 3, 4]
    assert [r["total"] for r in resumed.history] == [r["total"] for r in full.history]
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _grad_snapshot(trainer) -> dict:
    """Record the gradients the optimiser is about to apply (after DDP's all-reduce)."""
    grads = {}

    def hook(opt, args, kwargs):
        grads.update({k: p.grad.detach().clone() for k, p in trainer.model.named_parameters() if p.grad is not None})

    trainer.opt.register_step_pre_hook(hook)
    return grads


def _ddp_rank(rank: int, world: int, port: int, shared_dir, out_dir, result_path) -> None:
    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )
    torch.set_num_threads(1)
    tr = Trainer(small_config(shared_dir, out_dir, batch_size=1, feature_cache=str(out_dir / "cache")), progress=False)
    tr.cache.fill(tr.train_seqs, progress=False)
    grads = _grad_snapshot(tr)
    torch.distributed.barrier()
    tr.train_step()
    if rank == 0:
        torch.save({"params": {k: v.detach() for k, v in tr.model.state_dict().items()}, "grads": grads}, result_path)
    torch.distributed.destroy_process_group()


def test_two_process_ddp_equals_one_process_on_the_whole_batch(shared_dir, tmp_path):
    """Each rank takes one clip of the global batch of two; DDP's averaged gradient and the
    parameters after one AdamW step equal one process stepping on both clips."""
    single = Trainer(small_config(shared_dir, tmp_path, batch_size=2), progress=False)
    single.cache.fill(single.train_seqs, progress=False)
    grads = _grad_snapshot(single)
    single.train_step()
    result = tmp_path / "ddp.pt"
    mp.start_processes(
        _ddp_rank, args=(2, _free_port(), shared_dir, tmp_path, result), nprocs=2, join=True, start_method="spawn"
    )
    ddp = torch.load(result, weights_only=True)
    assert set(ddp["grads"]) == set(grads)
    for k, g in grads.items():
        assert torch.allclose(ddp["grads"][k], g, rtol=1e-4, atol=1e-7), k
    # AdamW's first step moves a parameter by lr * g / (|g| + eps): a gradient that is zero up to
    # float rounding (e.g. attention key biases, which softmax ignores) is normalised to +-lr by
    # its rounding noise, so those parameters are compared through their gradients above only.
    params = single.model.state_dict()
    worst, compared, total = 0.0, 0, 0
    for k, g in grads.items():
        clear = g.abs() > 1e-6  # elements whose gradient is well above float rounding
        compared += int(clear.sum())
        total += g.numel()
        if bool(clear.any()):
            worst = max(worst, float((params[k] - ddp["params"][k])[clear].abs().max()))
    assert compared > 0.5 * total
    assert worst <= 1e-6, f"largest parameter difference {worst}"


def test_training_memory_is_the_inference_divemem(shared_dir, tmp_path, monkeypatch):
    """The trainer builds memory-attention input with the tracker's own code, and the frames it
    selects are what a fresh inference memory bank selects from the same writes."""
    assert unroll.InstrumentMemory is memory_bank.InstrumentMemory
    assert unroll.build_memory_inputs is memory_bank.build_memory_inputs
    writes, selections = [], []
    orig_add_tracked, orig_add_cond = (
        memory_bank.InstrumentMemory.add_tracked,
        memory_bank.InstrumentMemory.add_conditioning,
    )
    orig_gather = memory_bank.InstrumentMemory.gather

    def add_tracked(self, *a):
        writes.append(("tracked", a[0], a[1].detach().clone(), a[2].detach().clone(), a[3], a[4]))
        return orig_add_tracked(self, *a)

    def add_cond(self, *a):
        writes.append(("cond", a[0], a[1].detach().clone(), a[2].detach().clone(), a[3], a[4]))
        return orig_add_cond(self, *a)

    def gather(self, t):
        frames, ptrs = orig_gather(self, t)
        selections.append((t, [e.frame_idx for e, _ in frames]))
        return frames, ptrs

    monkeypatch.setattr(memory_bank.InstrumentMemory, "add_tracked", add_tracked)
    monkeypatch.setattr(memory_bank.InstrumentMemory, "add_conditioning", add_cond)
    monkeypatch.setattr(memory_bank.InstrumentMemory, "gather", gather)
    cfg = small_config(
        shared_dir,
        tmp_path,
        data=DataConfig(
            sources=[SourceConfig(path=str(shared_dir / "data" / "davis2016_train"), sequences=["dog"])],
            clip_frames=8,
            far_frames=2,
            max_frames_per_sequence=20,
            affine_prob=0.0,
        ),
        memory=MemoryConfig(num_maskmem=3, long_term_frames=2, candidate_pool_size=2, iou_threshold=0.0),
    )
    tr = Trainer(cfg, progress=False)
    tr.cache.fill(tr.train_seqs, progress=False)
    tr.train_step()
    assert len(selections) == 7
    monkeypatch.undo()
    mem = memory_bank.InstrumentMemory(tr.model.memory_cfg)
    replay = []
    for kind, t, maskmem, ptr, score, iou in writes:
        (mem.add_conditioning if kind == "cond" else mem.add_tracked)(t, maskmem, ptr, score, iou)
        if t + 1 < 8:
            replay.append((t + 1, [e.frame_idx for e, _ in mem.gather(t + 1)[0]]))
    assert replay == selections
    assert any(len(sel) > 3 for _, sel in selections), "the long-term memory was never used"


def _track_j(tracker_sam, seq, n, prompt_mask=True):
    import cv2

    from sam2s_ros.backends.torch_backend import TorchBackend
    from sam2s_ros.evaluation import davis
    from sam2s_ros.tracking.config import TrackerConfig
    from sam2s_ros.tracking.tracker import InstrumentTracker
    from sam2s_ros.tracking.types import PromptInput, PromptMode

    tcfg = TrackerConfig(model_size="sam2s_mobile", image_size=tracker_sam.image_size, allow_random_weights=True)
    tracker = InstrumentTracker(TorchBackend(tracker_sam), tcfg)
    s = tracker_sam.image_size
    js = []
    for i in range(n):
        frame = seq.read_frame(i)
        prompts = []
        if i == 0:
            gt0 = cv2.resize(seq.labels[0].astype(np.uint8), frame.shape[1::-1], interpolation=cv2.INTER_NEAREST) > 0
            prompts = [PromptInput(1, PromptMode.NEW, mask=gt0)]
        res = tracker.track(frame, prompts)
        if i > 0:
            pred = cv2.resize(res.instruments[0].mask.astype(np.uint8), (s, s), interpolation=cv2.INTER_NEAREST) > 0
            js.append(davis.jaccard(pred, seq.labels[i] == 1))
    return float(np.mean(js))


@pytest.mark.slow
def test_learning_end_to_end_from_random_weights(shared_dir, tmp_path, capsys):
    """From random initialisation at 256², frames 0-24 of one sequence: the normal tracker
    (mask prompt on frame 0, nothing after) reaches J >= 0.6 on them after training."""
    steps = 150
    cfg = small_config(
        shared_dir,
        tmp_path,
        image_size=256,
        steps=steps,
        max_frames=25,
        batch_size=1,
        data=DataConfig(
            sources=[SourceConfig(path=str(shared_dir / "data" / "davis2016_train"), sequences=["dog"])],
            clip_frames=4,
            far_frames=1,
            max_frames_per_sequence=25,
            affine_prob=0.0,
            hflip_prob=0.0,
            reverse_prob=0.0,
        ),
        prompts=PromptConfig(prob_points=0.0),
        optim=OptimConfig(lr=1e-3, warmup_steps=10, weight_decay=0.0),
    )
    tr = Trainer(cfg, progress=False)
    seq = tr.train_seqs[0]
    untrained = _track_j(tr.sam, seq, 25)
    t0 = time.process_time()
    tr.run()
    cpu = time.process_time() - t0
    trained = _track_j(tr.sam, seq, 25)
    with capsys.disabled():
        print(f"\n[learning test] {steps} steps, {cpu:.0f} s CPU: mean J {untrained:.3f} untrained -> {trained:.3f}")
    assert untrained < 0.3
    assert trained >= 0.6
