"""DDP: two gloo CPU ranks with half the batch each make the same optimizer step as one process.

BatchNorm layers are put in eval mode for the comparison: in train mode they normalise with the
statistics of the local batch, which differ between 2 x B/2 and 1 x B by design (SyncBN would fix
that but is CUDA-only in torch). Everything else - the loss normaliser averaged over ranks
(``ddp_normalizer``), the ``loss * world_size`` scaling, DDP's gradient averaging, clipping, the SGD step -
must agree; the tolerance covers the different float summation order of the all-reduce.

Two batches: many large boxes, and a single box in rank 0's half whose target-score sum is below
the world size - the case where clamping the normaliser to >= 1 per rank instead of globally would
make DDP's step differ from the single-process step (``ddp_normalizer`` clamps the global sum).
"""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from yolov9k.engine import Trainer

pytestmark = pytest.mark.slow

CFG = dict(
    model="gelan-t", imgsz=64, batch=4, nbs=4, workers=0, device="cpu", warmup_epochs=0.0, lr0=0.05,
    plots=False, verbose=False, dist_timeout=60,
)  # fmt: skip


def _batch(kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    imgs = torch.randint(0, 256, (4, 3, 64, 64), generator=g, dtype=torch.uint8)
    if kind == "many":
        rows = [
            [i, (i + j) % 5, 0.25 + 0.1 * j, 0.3 + 0.1 * i, 0.5, 0.45] for i in range(4) for j in range(6)
        ]
    else:  # one box, only on rank 0: global target-score sum < world size
        rows = [[0, 1, 0.5, 0.5, 0.3, 0.3]]
    return imgs, torch.tensor(rows, dtype=torch.float32)


def _step(trainer: Trainer, imgs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    for m in trainer.net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.eval()
    items, ok = trainer.forward_backward(imgs, targets)
    assert ok
    assert trainer.optimizer_step(0)
    return {k: v.detach().clone() for k, v in trainer.net.state_dict().items()}


def _worker(rank: int, port: int, data: str, project: str, out: str, kind: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE="2")  # fmt: skip
    torch.set_num_threads(1)
    from yolov9k.engine.distributed import destroy_distributed

    trainer = Trainer(dict(CFG, data=data, project=project))
    try:
        trainer.setup()
        imgs, targets = _batch(kind)
        mine = targets[(targets[:, 0] >= 2 * rank) & (targets[:, 0] < 2 * rank + 2)].clone()
        mine[:, 0] -= 2 * rank
        state = _step(trainer, imgs[2 * rank : 2 * rank + 2], mine)
        if rank == 0:
            torch.save(state, out)
    finally:
        destroy_distributed()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("kind", ["many", "one_box"])
def test_two_ranks_match_one_process(tmp_path, kind):
    from yolov9k.data import generate_demo_dataset

    data = str(generate_demo_dataset(tmp_path / "demo", num_train=8, num_val=2, imgsz=64, seed=0))
    out = tmp_path / "ddp_state.pt"
    mp.spawn(_worker, args=(_free_port(), data, str(tmp_path / "runs"), str(out), kind), nprocs=2, join=True)
    ddp_state = torch.load(out, weights_only=True)

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = Trainer(dict(CFG, data=data, project=str(tmp_path / "runs1")))
        single.setup()
        before = {k: v.detach().clone() for k, v in single.net.state_dict().items()}
        state = _step(single, *_batch(kind))
    finally:
        torch.set_num_threads(n)

    moved = max((state[k].float() - before[k].float()).abs().max().item() for k in state)
    assert moved > 1e-4  # the step did something, so the comparison means something
    for k, v in state.items():
        if v.is_floating_point():
            diff = (v - ddp_state[k]).abs().max().item()
            assert diff <= 1e-6 + 1e-5 * v.abs().max().item(), f"{k}: max diff {diff:.3e}"
        else:
            assert torch.equal(v, ddp_state[k]), k
