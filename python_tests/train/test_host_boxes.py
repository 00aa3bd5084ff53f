"""The teacher warp's boxes in training make no device-to-host copy (issue 28 item 5c, docs/ops.md §3.1-3.2).

There is no GPU here, so "on the device" is simulated: `_OnDevice` is a tensor subclass whose every read
back to the host (.cpu(), .to("cpu"), .item(), .tolist(), .numpy(), bool/float/int) is counted. On a GPU
each of those would copy the values back and synchronise the stream. The old path (device tensors only)
must count reads, so the counter can fail; the host-copy path must count none and give the same bits."""
import copy

import pytest
import torch

from anyres_fast.ops import lanczos_resample, teacher_warp
from anyres_fast.train.anyres_recipe import AnyresRecipe
from anyres_fast.train.trainer import Context, TrainOptions

from helpers import micro_config, write_images

pytestmark = pytest.mark.usefixtures("one_thread")

READS = []
_HOST_READS = {"cpu", "item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__"}


def _to_cpu(args, kwargs) -> bool:
    targets = list(args[1:]) + list(kwargs.values())
    return any(isinstance(t, (str, torch.device)) and torch.device(t).type == "cpu" for t in targets)


class _OnDevice(torch.Tensor):
    """A CPU tensor standing in for a CUDA one: host reads are recorded in READS."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in _HOST_READS or (name == "to" and _to_cpu(args, kwargs)):
            READS.append(name)
        return super().__torch_function__(func, types, args, kwargs)


def _reads(fn):
    READS.clear()
    out = fn()
    return out, list(READS)


def _bits_equal(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.view(torch.int32), b.view(torch.int32))


def test_lanczos_box_host_reads_no_device_box_and_gives_the_same_bits():
    x = torch.randn(3, 2, 20, 24, generator=torch.Generator().manual_seed(0))
    box = torch.tensor([[1.5, 0.5, 22.25, 19.0], [-2.0, 3.0, 10.0, 18.5], [0.0, 0.0, 24.0, 20.0]])
    (y_old, m_old), reads_old = _reads(lambda: lanczos_resample(x, (9, 13), box=box.as_subclass(_OnDevice),
                                                                return_mask=True))
    assert reads_old, "the counter must see the old path's host copy of the boxes"
    (y_new, m_new), reads_new = _reads(lambda: lanczos_resample(x, (9, 13), box=box.as_subclass(_OnDevice),
                                                                return_mask=True, box_host=box.clone()))
    assert reads_new == []
    assert _bits_equal(y_new, y_old) and torch.equal(m_new, m_old)


def test_lanczos_box_host_is_checked():
    x = torch.randn(2, 1, 8, 8)
    box = torch.tensor([[0.0, 0.0, 4.0, 4.0], [1.0, 1.0, 5.0, 6.0]])
    with pytest.raises(ValueError, match="other values"):
        lanczos_resample(x, 4, box=box, box_host=box + 1)
    with pytest.raises(ValueError, match="shape"):
        lanczos_resample(x, 4, box=box, box_host=box[:1])
    with pytest.raises(TypeError, match="tensor box"):
        lanczos_resample(x, 4, box=(0, 0, 4, 4), box_host=box[0])
    with pytest.raises(ValueError, match="inverted"):      # the checks run on the host copy
        bad = torch.tensor([[0.0, 0.0, 4.0, 4.0], [5.0, 1.0, 1.0, 6.0]])
        lanczos_resample(x, 4, box=bad.as_subclass(_OnDevice), box_host=bad)


def test_teacher_warp_with_host_values_gives_the_same_bits_as_device_values():
    patch = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    canvas, box = torch.full((4,), 128.0), torch.tensor([[0.0, 0], [64, 0], [32, 32], [96, 96]])
    (w_old, m_old), reads_old = _reads(lambda: teacher_warp(patch, canvas.as_subclass(_OnDevice),
                                                            box.as_subclass(_OnDevice), 32))
    assert reads_old
    (w_new, m_new), reads_new = _reads(lambda: teacher_warp(patch, canvas.clone(), box.clone(), 32))
    assert reads_new == []
    assert _bits_equal(w_new, w_old) and torch.equal(m_new, m_old)


def _opts(out):
    return TrainOptions(out=str(out), batch=4, kimg=1, workers=0, snap=0, tick=1, progress=False, seed=1)


def test_next_batch_keeps_host_copies_of_the_named_keys(tmp_path):
    ctx = Context(_opts(tmp_path / "o"), torch.device("cpu"), 0, 1)
    ctx.batch_gpu, ctx.num_chunks = 2, 2
    batch = {"image": torch.randn(4, 3, 8, 8), "canvas": torch.tensor([64.0, 80, 96, 128]),
             "box": torch.arange(8.0).reshape(4, 2)}

    class _Stream:
        def next(self):
            return batch
    ctx.streams["hr"] = _Stream()
    chunks = ctx.next_batch("hr", host_keys=("canvas", "box", "absent"))
    assert [sorted(ch) for ch in chunks] == [["box", "box_host", "canvas", "canvas_host", "image"]] * 2
    for k, ch in enumerate(chunks):
        for key in ("canvas", "box"):
            assert ch[key + "_host"].device.type == "cpu"
            assert torch.equal(ch[key + "_host"], batch[key][2 * k:2 * k + 2])
    assert sorted(ctx.next_batch("hr")[0]) == ["box", "canvas", "image"]        # default: as before


def test_recipe_teacher_loss_reads_no_device_box_and_gives_the_same_bits(tmp_path):
    """loss_G of a patch chunk: G reads canvas/box where they are; the teacher warp reads the host copies
    that train_step keeps (next_batch host_keys), and the loss is the same bit for bit."""
    torch.manual_seed(0)
    rec = AnyresRecipe(micro_config(phase="fixed", lr_data=write_images(str(tmp_path / "lr"), [(64, 64)] * 4)))
    rec.build(Context(_opts(tmp_path / "o"), torch.device("cpu"), 0, 1))
    rec.teacher = copy.deepcopy(rec.G_ema)        # any frozen generator: only the box handling is tested
    z = torch.randn(4, rec.gcfg.z_dim, generator=torch.Generator().manual_seed(3))
    canvas, box = torch.full((4,), 128.0), torch.tensor([[0.0, 0], [64, 0], [32, 32], [64, 64]])
    chunk = {"image": torch.zeros(4, 3, 64, 64), "c": torch.zeros(4, 0),
             "canvas": canvas.as_subclass(_OnDevice), "box": box.as_subclass(_OnDevice)}
    (loss_old, st_old), reads_old = _reads(lambda: rec.loss_G(chunk, z))
    assert reads_old and st_old["G/teacher_l1"] > 0
    (loss_new, st_new), reads_new = _reads(lambda: rec.loss_G(dict(chunk, canvas_host=canvas, box_host=box), z))
    assert reads_new == []
    assert _bits_equal(loss_new, loss_old) and st_new == st_old
