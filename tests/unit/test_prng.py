"""Philox4x32-10: known answers, and the same bits in chunks, threads, processes and both code paths; rank
components generated many at a time equal each vector generated alone."""

import concurrent.futures
import hashlib
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import torch

from germinator_dist.core import prng
from germinator_dist.errors import SpecError

KAT = [  # Random123 kat_vectors, philox4x32 10 rounds: counter, key, expected
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]


@pytest.fixture(params=["compiled", "eager"])
def path(request, monkeypatch):
    monkeypatch.setenv("GERMINATOR_PRNG_COMPILE", "1" if request.param == "compiled" else "0")
    return request.param


@pytest.mark.parametrize("counter,key,expected", KAT)
def test_known_answers_single_row(counter, key, expected):
    out = prng.philox4x32(torch.tensor([counter]), torch.tensor(key))
    assert tuple(out[0].tolist()) == expected


def test_known_answers_on_the_fast_path(path):
    # 1024 rows (above the compile threshold) so the compiled kernel runs when enabled
    reps = 342
    counter = torch.tensor([c for c, _, _ in KAT] * reps)
    key = torch.tensor([k for _, k, _ in KAT] * reps)
    out = prng.philox4x32(counter, key)
    assert out.shape == (3 * reps, 4)
    assert out.tolist() == [list(e) for _, _, e in KAT] * reps
    # broadcast key form
    out2 = prng.philox4x32(torch.tensor([KAT[2][0]] * 1000), torch.tensor(KAT[2][1]))
    assert set(map(tuple, out2.tolist())) == {KAT[2][2]}
    assert prng.fast_path() == path


def test_compiled_equals_eager(monkeypatch):
    monkeypatch.setenv("GERMINATOR_PRNG_COMPILE", "1")
    fast = prng.random_bytes(123456789012, 3, 7, 0, 50_000)
    monkeypatch.setenv("GERMINATOR_PRNG_COMPILE", "0")
    slow = prng.random_bytes(123456789012, 3, 7, 0, 50_000)
    assert torch.equal(fast, slow)


@pytest.mark.parametrize("maker", ["int8", "uint8", "mask", "uniform", "normal"])
@pytest.mark.parametrize("chunk", [1, 7, 16, 333, 4096])
def test_chunks_equal_whole(maker, chunk, path):
    shape = (37, 211)  # 7807 elements, not a multiple of any block size
    n = shape[0] * shape[1]

    def make(**kw):
        if maker in ("int8", "uint8"):
            return prng.int_tensor(2**40 + 5, 2, 9, shape, maker, **kw)
        if maker == "mask":
            return prng.bernoulli_mask(99, 5, 1, shape, 0.3, **kw)
        return getattr(prng, maker)(4242, 6, 2, shape, **kw)

    whole = make()
    assert whole.shape == shape
    if chunk == 1:  # one element at a time is slow: sample positions
        for i in (0, 1, 15, 16, 17, n - 1):
            assert torch.equal(make(start=i, stop=i + 1), whole.reshape(-1)[i : i + 1])
        return
    parts = [make(start=a, stop=min(a + chunk, n)) for a in range(0, n, chunk)]
    assert torch.equal(torch.cat(parts), whole.reshape(-1))


def test_value_ranges_and_statistics():
    x = prng.int_tensor(1, 1, 0, (200_000,), "int8")
    assert x.min() >= -1.0 and x.max() < 1.0 and abs(float(x.mean())) < 0.01
    assert torch.equal(x * 128, torch.round(x * 128))  # exact multiples of 1/128
    u = prng.int_tensor(1, 1, 0, (200_000,), "uint8")
    assert u.min() >= 0.0 and u.max() < 1.0 and abs(float(u.mean()) - 0.5) < 0.01
    m = prng.bernoulli_mask(1, 1, 0, (200_000,), 0.25)
    assert set(m.unique().tolist()) <= {0.0, 1.0} and abs(float(m.mean()) - 0.25) < 0.005
    z = prng.normal(1, 1, 0, (200_000,))
    assert abs(float(z.mean())) < 0.01 and abs(float(z.std()) - 1.0) < 0.01
    un = prng.uniform(1, 1, 0, (200_000,))
    assert un.min() >= 0 and un.max() < 1 and abs(float(un.mean()) - 0.5) < 0.01


def test_streams_and_seeds_differ():
    base = prng.random_bytes(7, 1, 0, 0, 4096)
    assert not torch.equal(base, prng.random_bytes(8, 1, 0, 0, 4096))  # other seed
    assert not torch.equal(base, prng.random_bytes(7, 2, 0, 0, 4096))  # other role
    assert not torch.equal(base, prng.random_bytes(7, 1, 1, 0, 4096))  # other stream
    assert not torch.equal(base, prng.random_bytes(7 + 2**32, 1, 0, 0, 4096))  # high key word counts


def test_thread_count_does_not_change_bits():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = prng.int_tensor(31337, 3, 4, (100_000,))
        torch.set_num_threads(2)
        two = prng.int_tensor(31337, 3, 4, (100_000,))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)


def test_same_bits_in_another_process():
    code = (
        "import hashlib, torch; from germinator_dist.core import prng; "
        "x = prng.int_tensor(2**62 + 11, 4, 3, (300, 301)); "
        "print(hashlib.sha256(x.numpy().tobytes()).hexdigest())"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert other.returncode == 0, other.stderr
    here = prng.int_tensor(2**62 + 11, 4, 3, (300, 301))
    assert other.stdout.strip() == hashlib.sha256(here.numpy().tobytes()).hexdigest()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU on this machine")
def test_same_bits_on_gpu():  # pragma: no cover - runs where a GPU exists
    cpu = prng.int_tensor(5, 1, 0, (1000, 1000))
    gpu = prng.int_tensor(5, 1, 0, (1000, 1000), device="cuda")
    assert torch.equal(cpu, gpu.cpu())


def test_bad_input():
    with pytest.raises(SpecError, match="seed -1"):
        prng.int_tensor(-1, 1, 0, (4,))
    with pytest.raises(SpecError, match=r"seed 9223372036854775808"):
        prng.int_tensor(2**63, 1, 0, (4,))
    with pytest.raises(SpecError, match="int_dtype"):
        prng.int_tensor(1, 1, 0, (4,), "int4")
    with pytest.raises(SpecError, match="mask_density"):
        prng.bernoulli_mask(1, 1, 0, (4,), 1.5)
    with pytest.raises(SpecError, match="chunk"):
        prng.int_tensor(1, 1, 0, (4,), start=2, stop=9)
    with pytest.raises(SpecError, match="counter"):
        prng.philox4x32(torch.zeros(3, 3, dtype=torch.int64), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(SpecError, match="seeds.mask"):
        prng.check_seed(300, 8, "seeds.mask")


# ---- rank components: one generator call for many seeds, the same bits as one vector at a time ---------
COMPONENT_SEEDS = [0, 1, 2, 255, 256, 65535, 2**32 - 1, 2**32, 2**40 + 5, 2**62 + 11, 2**63 - 1] + [
    (i * 0x9E3779B97F4A7C15) % 2**63 for i in range(1, 40)
]  # 50 seeds: edges of every word, and a spread over the 63-bit range
ROLES = {"a1": 1, "b1": 2, "a2": 3, "b2": 4}


def component_bytes(parts) -> list[bytes]:
    """Per seed, the bytes of its four vectors (a1, b1, a2, b2) as generated."""
    a1, b1, a2, b2 = (p.numpy() for p in parts)
    return [a1[i].tobytes() + b1[i].tobytes() + a2[i].tobytes() + b2[i].tobytes() for i in range(a1.shape[0])]


def single_vectors(seed, stream, out, inp, int_dtype) -> bytes:
    """The same four vectors, each generated alone by int_tensor (the definition of a component)."""
    shapes = {"a1": (out,), "b1": (inp,), "a2": (out,), "b2": (inp,)}
    return b"".join(
        prng.int_tensor(seed, ROLES[v], stream, shapes[v], int_dtype).numpy().tobytes() for v in shapes
    )


@pytest.mark.parametrize("int_dtype", ["int8", "uint8"])
@pytest.mark.parametrize("out,inp", [(1, 1), (17, 33), (37, 211), (256, 64), (10, 256), (16, 15)])
def test_components_equal_each_vector_alone(int_dtype, out, inp, path):
    stream = 5
    a1, b1, a2, b2 = prng.components(COMPONENT_SEEDS, stream, out, inp, int_dtype)
    n = len(COMPONENT_SEEDS)
    assert (a1.shape, b1.shape, a2.shape, b2.shape) == ((n, out), (n, inp), (n, out), (n, inp))
    assert a1.dtype == torch.float32
    got = component_bytes((a1, b1, a2, b2))
    for i, seed in enumerate(COMPONENT_SEEDS):
        assert got[i] == single_vectors(seed, stream, out, inp, int_dtype), f"seed {seed}"
    # and the vectors of one seed differ from each other and from another stream's
    assert not torch.equal(a1[3], a2[3]) or out == 1
    other = prng.components(COMPONENT_SEEDS, stream + 1, out, inp, int_dtype)
    assert component_bytes(other) != got


def test_components_in_chunks_and_any_order_equal_the_batch(path):
    out, inp = 37, 211
    seeds = COMPONENT_SEEDS * 2  # a repeated seed gets the same vectors
    whole = component_bytes(prng.components(seeds, 2, out, inp, "int8"))
    assert whole[: len(COMPONENT_SEEDS)] == whole[len(COMPONENT_SEEDS) :]
    for size in (1, 7, 32):
        parts = []
        for a in range(0, len(seeds), size):
            parts += component_bytes(prng.components(seeds[a : a + size], 2, out, inp, "int8"))
        assert parts == whole
    order = list(range(len(seeds)))
    random.Random(0).shuffle(order)
    shuffled = component_bytes(prng.components([seeds[i] for i in order], 2, out, inp, "int8"))
    assert shuffled == [whole[i] for i in order]


def test_components_across_threads():
    out, inp = 256, 64
    seeds = COMPONENT_SEEDS
    whole = component_bytes(prng.components(seeds, 1, out, inp, "uint8"))
    chunks = [seeds[a : a + 5] for a in range(0, len(seeds), 5)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(prng.components, c, 1, out, inp, "uint8") for c in chunks * 3]
        futures += [pool.submit(prng.components, seeds, 1, out, inp, "uint8") for _ in range(3)]
        results = [component_bytes(f.result()) for f in futures]
    per_chunk = results[: 3 * len(chunks)]
    for rep in range(3):
        joined = [row for part in per_chunk[rep * len(chunks) : (rep + 1) * len(chunks)] for row in part]
        assert joined == whole
    assert all(r == whole for r in results[3 * len(chunks) :])


def test_components_in_another_process():
    code = (
        "import hashlib, sys; from germinator_dist.core import prng; "
        "seeds = [int(s) for s in sys.argv[1].split(',')]; "
        "parts = prng.components(seeds, 3, 10, 256, 'int8'); "
        "print(hashlib.sha256(b''.join(p.numpy().tobytes() for p in parts)).hexdigest())"
    )
    arg = ",".join(map(str, COMPONENT_SEEDS))
    # the other process runs the eager path (no compile to wait for); this one the compiled kernel
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GERMINATOR_PRNG_COMPILE": "0"}
    other = subprocess.run(
        [sys.executable, "-c", code, arg], capture_output=True, text=True, env=env, timeout=300
    )
    assert other.returncode == 0, other.stderr
    here = prng.components(COMPONENT_SEEDS, 3, 10, 256, "int8")
    assert other.stdout.strip() == hashlib.sha256(b"".join(p.numpy().tobytes() for p in here)).hexdigest()


def test_components_bad_input_and_empty():
    with pytest.raises(SpecError, match="seed -1"):
        prng.components([1, -1], 0, 4, 4)
    with pytest.raises(SpecError, match=r"seed 9223372036854775808"):
        prng.components([2**63], 0, 4, 4)
    with pytest.raises(SpecError, match="int_dtype"):
        prng.components([1], 0, 4, 4, "int4")
    shapes = [tuple(p.shape) for p in prng.components([], 0, 3, 5)]
    assert shapes == [(0, 3), (0, 5), (0, 3), (0, 5)]


@pytest.mark.parametrize(
    "bad,message",
    [
        ([3, True], "seed must be an integer, got True"),
        ([3, 1.5], "got 1.5"),
        ([3, -2], "seed -2 is outside"),
        ([3, 2**64], "seed 18446744073709551616 is outside"),
        (np.array([3, -2]), "seed -2 is outside"),
        (np.array([3, 2**63], dtype=np.uint64), "seed 9223372036854775808 is outside"),
        (np.array([3.0, 4.0]), None),  # whole floats are accepted as their integers, as check_seed does
    ],
)
def test_seed_array_checks_every_seed(bad, message):
    if message is None:
        assert prng.seed_array(bad).tolist() == [3, 4]
        return
    with pytest.raises(SpecError, match=message):
        prng.seed_array(bad)


def test_components_take_lists_arrays_and_tensors_alike():
    seeds = COMPONENT_SEEDS
    want = component_bytes(prng.components(list(seeds), 4, 10, 40))
    for form in (
        tuple(seeds),
        np.array(seeds, dtype=np.int64),
        np.array(seeds, dtype=np.uint64),
        torch.tensor(seeds),
        (s for s in seeds),
    ):
        assert component_bytes(prng.components(form, 4, 10, 40)) == want


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU on this machine")
def test_components_same_bits_on_gpu():  # pragma: no cover - runs where a GPU exists
    cpu = prng.components(COMPONENT_SEEDS, 2, 256, 64, "int8")
    gpu = prng.components(COMPONENT_SEEDS, 2, 256, 64, "int8", device="cuda")
    assert component_bytes(cpu) == component_bytes([g.cpu() for g in gpu])


def test_components_into_a_reused_buffer_equal_fresh_ones():
    out, inp = 10, 40
    buf = torch.full((prng.component_values(len(COMPONENT_SEEDS), out, inp),), float("nan"))
    want = component_bytes(prng.components(COMPONENT_SEEDS, 4, out, inp))
    for _ in range(2):  # the second call overwrites the first's values in the same memory
        got = prng.components(COMPONENT_SEEDS, 4, out, inp, out=buf)
        assert all(v.data_ptr() >= buf.data_ptr() for v in got)
        assert component_bytes(got) == want
    short = prng.components(COMPONENT_SEEDS[:3], 4, out, inp, out=buf)  # a smaller batch fits too
    assert component_bytes(short) == want[:3]
    with pytest.raises(SpecError, match="out: expected a 1-D torch.float32 buffer"):
        prng.components(COMPONENT_SEEDS, 4, out, inp, out=buf[:10])
    with pytest.raises(SpecError, match="out: expected"):
        prng.components(COMPONENT_SEEDS, 4, out, inp, out=buf.double())
