"""Speed work must not move a byte: small fake-engine runs write what the release before the
overhead work (9e917e9) wrote, file by file.

The digests below were computed from that release's outputs for these four runs and checked
equal to today's when the overhead work landed. A change that means to alter outputs updates
them in the same commit and says why; any other change that trips this test changed results.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tests.cli import SMALL_FAKE_RUN, charter

DIGESTS = {
    "ranking=all_pairs": {
        "candidates.jsonl": "89544c2c1afa8b0fe57decb11867fdd2de9ad69a4481624d128f936f97c52a05",
        "judgments.jsonl": "4c832a91ba150fc8bd323299d6598c63d5a61fdead7c8ddf3412f5a6e439c542",
        "rankings.jsonl": "28aa28980192260097391578b17ec5f7e244e6b50292e0a755be07b4b2f8ce3a",
        "pairs.jsonl": "48169b1286e52a355f5627c275d6a48c4c5d62beba0d2b068723572cc8d638e5",
        "rejects.jsonl": "e5ca0bb3a23dec1a541df26a887144af40bfb001602f139ffb585bbb47199ff8",
        "README.md": "43672f0245117c0b4f2abde7e1c7e3a67f9a8b8090f8717af319b17b7d2a8481",
    },
    "ranking=tournament": {
        "candidates.jsonl": "89544c2c1afa8b0fe57decb11867fdd2de9ad69a4481624d128f936f97c52a05",
        "judgments.jsonl": "0bcccb6c064b1b7db28d9b9cfd6c138c2129ed3eae3d8c59c480f92273e49109",
        "rankings.jsonl": "14ab5f3bdb93bc41be12fa84551732ad4c72e348892c689474e8b7fb4d8a8300",
        "pairs.jsonl": "64ed8196724a29afb058638043e178884c2ccdf89c8b574b9cf00a866d3fdd57",
        "rejects.jsonl": "3b9a34427d213491402fd1ca61608d61610dfd1c525a19f86bd18808b94941e1",
        "README.md": "381d7cedfae47cfe5a18a5e1001cfd9ca5e48f11b0bda0a7ec702b3a2f418be8",
    },
    "ranking=knockout": {
        "candidates.jsonl": "89544c2c1afa8b0fe57decb11867fdd2de9ad69a4481624d128f936f97c52a05",
        "judgments.jsonl": "b9745497e91070f100cee351d3a1ef5e5e00a05463d06443c75e96f314722570",
        "rankings.jsonl": "51eaed0cea74f7cb613d1839d0632b5840dbfb8c8f255190fcd65ed42ea3be19",
        "pairs.jsonl": "f5c9e90fb1fbbee638a15a9a67bed8e7ef60806a663b5a0bc2f0e75b9c8db3c5",
        "rejects.jsonl": "1754a4900fb4dbbd0905840864304266fd10fa31dee4f4a50a1a22c68680033b",
        "README.md": "2245fad6386c0711f4cf2eb4bfda46c763c6f5049685a23f3281eadad78a0109",
    },
    "principle_per=all": {
        "candidates.jsonl": "89544c2c1afa8b0fe57decb11867fdd2de9ad69a4481624d128f936f97c52a05",
        "judgments.jsonl": "66bc27b6551cfb6d50d86f8f357544575da5b2dba99061c51ae43d5d65c1e124",
        "rankings.jsonl": "e16071283e22621fe32e447635283942aae3edbb36e44d08d8e6b23de38755bd",
        "pairs.jsonl": "823731ca4e5af995d13e52d81b357328d39d0014fd4a142bdfed4d9a58c6d950",
        "rejects.jsonl": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "README.md": "b2979562529ee009845a4b8b77208feb5328d92dfb54e11471c202137f1b4b9f",
    },
}


@pytest.mark.parametrize("setting", list(DIGESTS))
def test_a_small_run_writes_the_bytes_the_release_before_wrote(tmp_path: Path, setting: str):
    run = tmp_path / "run"
    result = charter(
        "run",
        *SMALL_FAKE_RUN,
        setting,
        f"cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={run}",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    written = {
        name: hashlib.sha256((run / name).read_bytes()).hexdigest() for name in DIGESTS[setting]
    }
    assert written == DIGESTS[setting]
