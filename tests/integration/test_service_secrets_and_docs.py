"""Against a real redis-server: passwords of any shape authenticate from the URL and never show, and what the
commands read back from the table (a submission document, a stored spec) is decoded into one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import quote

import pytest

from germinator_dist.config import parse_job_spec
from germinator_dist.errors import ConnectionFailed, TableError
from germinator_dist.search.job_setup import create_job
from germinator_dist.service import operations as service
from germinator_dist.table import SeedTable
from germinator_dist.table.conn import PASSWORD_ENV

PASSWORD = "Se/cr@t:pa%ss+wo=rd#?"


def test_a_password_holding_url_characters_authenticates_and_never_shows(redis_factory, monkeypatch):
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    server = redis_factory(password=PASSWORD)
    # "%" starts an escape in a URL, so it is written %25; every other character may be typed as is
    typed = PASSWORD.replace("%", "%25")
    for pw in (typed, quote(PASSWORD, safe="")):
        with SeedTable(f"redis://:{pw}@127.0.0.1:{server.port}/0") as table:
            assert table.list_jobs() == []
            assert table.url == f"redis://:***@127.0.0.1:{server.port}/0"
    wrong = "Wr/ong@:%25+="
    with SeedTable(f"redis://:{wrong}@127.0.0.1:{server.port}/0", retries=0) as table:
        with pytest.raises(ConnectionFailed, match="refused the credentials") as err:
            table.list_jobs()
    assert "Wr/ong" not in str(err.value) and "Wr" not in str(err.value).replace("redis://", "")


@pytest.fixture
def made_job(table, job_id):
    spec = parse_job_spec({"job": job_id, "model": {"hidden": [8], "rank": 2}, "search": {"swap": None}})
    create_job(table, spec)
    return job_id


def test_cancel_with_a_malformed_submission_document(table, made_job, redis_server):
    ep = service.resolve(redis_server.url, "http://127.0.0.1:1")
    for doc in ("[1, 2]", '{"id": 5}', '"text"'):
        table.put_doc(made_job, "submission", doc)
        with pytest.raises(
            TableError, match=rf"job {made_job}: the stored submission document is not a JSON"
        ) as err:
            service.cancel(table, ep, made_job)
        assert "\n" not in str(err.value)
    assert table.get_state(made_job).value == "CANCELLED"  # the table's part of the cancel is done


def test_export_with_a_stored_spec_of_an_unknown_field(table, job_id, tmp_path: Path):
    spec = parse_job_spec({"job": job_id, "model": {"hidden": [8], "rank": 2}, "search": {"swap": None}})
    spec, _ = create_job(table, spec)
    rows = [table.entry(job_id, k) for k in range(table.job_info(job_id).n_layers)]
    table.delete_job(job_id)
    stored = {**json.loads(spec.model_dump_json()), "bogus": 1}
    table.create_job(job_id, json.dumps(stored), rows, 1, seed_bits=spec.model.seed_bits)
    out = tmp_path / "m.json"
    with pytest.raises(
        TableError, match=rf"job {job_id}: the stored spec is not a valid job spec: bogus"
    ) as err:
        service.export(table, job_id, out)
    assert "\n" not in str(err.value) and not out.exists()
