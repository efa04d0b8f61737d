"""sketch-rnn serve: the JSON API on a trained run folder, its refusals, concurrency, and the command."""

import dataclasses
import json
import re
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from starlette.testclient import TestClient

from sketch_rnn import data, presets, runs, sampling, serve
from sketch_rnn.cli import main
from sketch_rnn.model import build_model
from sketch_rnn.synthetic import synthetic

PREFIX = [[0, 0, 0], [20.5, 5, 0], [20, -5, 1], [3, 30, 0], [-10, 2, 1]]
MAX_BODY = 4096


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder as ``sketch-rnn train`` writes it (config.json, model.keras), of an untrained tiny
    model (the API needs no good one; tests/test_serve_browser.py serves a trained one), its checked
    config and its model loaded."""
    out = tmp_path_factory.mktemp("run")
    hps, sketches = presets.get("tiny"), synthetic(20, seed=0)
    runs.write_config(out, {
        "preset": "tiny", "hparams": dataclasses.asdict(hps), "scale": data.scale_factor(sketches.train),
        "data": {"source": "synthetic", "per_class": 20, "seed": 0}, "classes": list(sketches.class_names),
        "seed": 0, "step": 0, "target": 0, "epoch_steps": 2,
    })
    build_model(hps, compile=False).save(out / "model.keras")
    return out, runs.read_config(out), runs.load_model(out)


@pytest.fixture(scope="module")
def client(run):
    _, config, model = run
    with TestClient(serve.create_app(model, config, max_body=MAX_BODY)) as client:
        yield client


def rows(sketch):
    return [[round(float(dx), 2), round(float(dy), 2), int(pen)] for dx, dy, pen in sketch]


def test_info_names_the_run(client, run):
    _, config, _ = run
    info = client.get("/api/info").json()
    assert {key: info[key] for key in ("preset", "classes", "conditional", "max_seq_len", "scale")} == {
        "preset": "tiny", "classes": config["classes"], "conditional": True, "max_seq_len": 12,
        "scale": config["scale"],
    }
    assert 50 < info["extent"] < 150  # the synthetic shapes are 50 to 150 units across


def test_complete_starts_with_the_strokes_sent_and_is_the_model_s_continuation_in_pixels(client, run):
    _, config, model = run
    answer = client.post("/api/complete", json={"strokes": PREFIX, "temperature": 0.7, "seed": 3})
    assert answer.status_code == 200
    strokes = answer.json()["strokes"]
    assert strokes[: len(PREFIX)] == PREFIX and len(PREFIX) < len(strokes) <= 13 and strokes[-1][2] == 1
    [expected] = sampling.complete(model, [np.array(PREFIX)], temperature=0.7, seed=3, scale=config["scale"])
    assert strokes[len(PREFIX):] == rows(expected[len(PREFIX):])


def test_sample_reconstruct_interpolate(client, run):
    _, config, model = run
    sample = client.post("/api/sample", json={"temperature": 2, "seed": 5}).json()["strokes"]
    assert sample == rows(sampling.sample(model, 1, temperature=2, seed=5, scale=config["scale"])[0])
    rebuilt = client.post("/api/reconstruct", json={"strokes": PREFIX, "seed": 1}).json()["strokes"]
    assert 1 <= len(rebuilt) <= 12 and rebuilt[-1][2] == 1 and all(len(row) == 3 for row in rebuilt)
    second = [[1, 1, 0], [30, 0, 0], [0, 30, 1]]
    answer = client.post("/api/interpolate", json={"first": PREFIX, "second": second, "steps": 3}).json()
    assert [len(s) >= 1 and s[-1][2] for s in answer["sketches"]] == [1, 1, 1]


def test_the_page_and_its_files_are_served_by_the_package(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<canvas id="ink">' in page.text
    links = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sorted(links) == ["/static/app.js", "/static/style.css", "data:,"]  # nothing from elsewhere
    assert [client.get(link).status_code for link in links if link != "data:,"] == [200, 200]
    script = client.get("/static/app.js").text
    assert "pointerdown" in script and "/api/complete" in script and "http" not in script


def bad(what, endpoint="/api/complete", **fields):
    return pytest.param(endpoint, json.dumps(fields).encode(), what, id=what)


def raw(what, body, endpoint="/api/complete"):
    return pytest.param(endpoint, body, what, id=what)


@pytest.mark.parametrize("endpoint, body, error", [
    raw("the body is not JSON", b'{"strokes": [[0, 0, 1]'),
    raw("the body is not JSON (UnicodeDecodeError", b'{"strokes": "\xff\xfe\xfa"}'),
    raw("the body is not JSON (RecursionError", b"[" * 3000, "/api/sample"),
    raw("the body must be a JSON object", b"[[0, 0, 1]]"),
    bad("unknown field 'stroke'", stroke=PREFIX),
    bad("the field 'strokes' is missing", temperature=0.5),
    bad("the field 'second' is missing", "/api/interpolate", first=PREFIX),
    bad("strokes must be a non-empty list", strokes="0,0,1"),
    bad("strokes must be a non-empty list of [dx, dy, pen] points", strokes=[]),
    bad("strokes[1] must be a point [dx, dy, pen] of three numbers, got [1, 2]", strokes=[[0, 0, 0], [1, 2]]),
    bad("strokes[0] must be a point [dx, dy, pen] of three numbers", strokes=[[0, "1", 1]]),
    bad("strokes[0] must be a point [dx, dy, pen] of three numbers", strokes=[[True, 0, 1]]),
    bad("strokes[0] must be a point [dx, dy, pen] of three numbers", strokes=[0, 0, 1]),
    raw("strokes[1] has an offset that is not finite", b'{"strokes": [[0, 0, 0], [NaN, 0, 1]]}'),
    raw("strokes[0] has an offset that is not finite", b'{"strokes": [[0, -Infinity, 1]]}'),
    raw("strokes[0] has an offset that is not finite", b'{"strokes": [[1e999, 0, 1]]}'),
    bad("strokes[0] has an offset that is not finite or over", strokes=[[1e6, 0, 1]]),
    bad("strokes[0] has pen 2: 0 (down) or 1", strokes=[[0, 0, 2]]),
    bad("strokes[0] has pen 0.5", strokes=[[0, 0, 0.5]]),
    bad("strokes has 13 points, more than the model's max_seq_len=12", strokes=[[1, 1, 0]] * 12 + [[1, 1, 1]]),
    bad("first has 13 points, more than the model's max_seq_len=12", "/api/interpolate",
        first=[[1, 1, 1]] * 13, second=PREFIX),
    bad("strokes[0] has pen -1", "/api/reconstruct", strokes=[[0, 0, -1]]),
    bad("temperature must be a number in (0, 2], got 0", strokes=PREFIX, temperature=0),
    bad("temperature must be a number in (0, 2], got -1", "/api/sample", temperature=-1),
    bad("temperature must be a number in (0, 2], got 2.5", "/api/sample", temperature=2.5),
    bad('temperature must be a number in (0, 2], got "hot"', "/api/sample", temperature="hot"),
    bad("temperature must be a number in (0, 2], got null", "/api/sample", temperature=None),
    raw("temperature must be a number in (0, 2], got NaN", b'{"temperature": NaN}', "/api/sample"),
    raw("temperature must be a number in (0, 2], got 1000", b'{"temperature": 1' + b"0" * 400 + b"}", "/api/sample"),
    bad("seed must be an integer in [0, 4294967295], got -1", "/api/sample", seed=-1),
    bad("seed must be an integer in [0, 4294967295], got 1.5", "/api/sample", seed=1.5),
    bad("seed must be an integer in [0, 4294967295], got 1099511627776", "/api/sample", seed=2**40),
    bad("steps must be an integer in [2, 16], got 1", "/api/interpolate", first=PREFIX, second=PREFIX, steps=1),
    bad("steps must be an integer in [2, 16], got 17", "/api/interpolate", first=PREFIX, second=PREFIX, steps=17),
])
def test_bad_input_is_a_400_naming_the_problem_and_the_server_goes_on(client, endpoint, body, error):
    answer = client.post(endpoint, content=body)
    assert answer.status_code == 400
    assert answer.json()["error"].startswith(error)
    assert client.get("/api/info").status_code == 200


def test_a_body_over_the_limit_is_a_413_by_its_length_or_by_its_bytes(client):
    big = json.dumps({"strokes": [[1.123456, 1.123456, 0]] * 400}).encode()
    answer = client.post("/api/complete", content=big)
    assert answer.status_code == 413
    assert answer.json() == {"error": f"the body is over the limit of {MAX_BODY} bytes (Content-Length: {len(big)})"}
    chunked = client.post("/api/complete", content=iter([big[:3000], big[3000:]]))  # no Content-Length
    assert chunked.status_code == 413
    assert chunked.json() == {"error": f"the body is over the limit of {MAX_BODY} bytes"}
    assert client.post("/api/sample", json={"seed": 2}).status_code == 200


def test_unknown_paths_and_methods_answer_json(client):
    assert (client.get("/api/nothing").status_code, client.get("/api/nothing").json()) == (404, {"error": "Not Found"})
    answer = client.get("/api/complete")
    assert (answer.status_code, answer.json()) == (405, {"error": "Method Not Allowed"})


def test_an_unconditional_model_completes_and_samples_but_does_not_encode(run):
    _, config, _ = run
    hps = dataclasses.replace(presets.get("tiny"), conditional=False)
    config = {**config, "hparams": dataclasses.asdict(hps)}
    client = TestClient(serve.create_app(build_model(hps), config))
    assert client.get("/api/info").json()["conditional"] is False
    done = client.post("/api/complete", json={"strokes": PREFIX}).json()["strokes"]
    assert done[: len(PREFIX)] == PREFIX
    assert client.post("/api/sample", json={}).status_code == 200
    for endpoint, body in (("reconstruct", {"strokes": PREFIX}), ("interpolate", {"first": PREFIX, "second": PREFIX})):
        answer = client.post(f"/api/{endpoint}", json=body)
        assert answer.status_code == 400
        assert answer.json()["error"] == f"{endpoint} needs a conditional model (with an encoder); this one is unconditional"


def test_20_concurrent_requests_are_all_read_while_the_model_runs_one_at_a_time(client, run, monkeypatch):
    _, config, model = run
    n = 20
    read, all_read = [0], threading.Event()
    active, peak, threads = [0], [0], set()
    lock = threading.Lock()
    check_number, sample = serve._number, sampling.sample

    def reading(value, name, *args, **kwargs):  # on the event loop, before the request waits for the model
        if name == "seed":
            with lock:
                read[0] += 1
                if read[0] == n:
                    all_read.set()
        return check_number(value, name, *args, **kwargs)

    def sampling_(*args, **kwargs):  # on the model's thread
        assert all_read.wait(timeout=60), "the event loop did not read every request while the model was busy"
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            threads.add(threading.current_thread().name)
        try:
            return sample(*args, **kwargs)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(serve, "_number", reading)
    monkeypatch.setattr(sampling, "sample", sampling_)
    with ThreadPoolExecutor(n) as pool:
        answers = list(pool.map(lambda seed: client.post("/api/sample", json={"seed": seed}), range(n)))
    assert [a.status_code for a in answers] == [200] * n
    for seed in (0, n - 1):
        expected = sample(model, 1, temperature=0.5, seed=seed, scale=config["scale"])[0]
        assert answers[seed].json()["strokes"] == rows(expected)
    assert peak[0] == 1 and len(threads) == 1 and threads.pop().startswith("sketch-rnn-model")


def test_serve_command_errors_exit_2(run, tmp_path, capsys):
    out, _, _ = run
    with pytest.raises(SystemExit) as stop:
        main(["serve", "--out", str(tmp_path)])
    assert stop.value.code == 2
    assert "no trained model here" in capsys.readouterr().err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(SystemExit) as stop:
            main(["serve", "--out", str(out), "--port", str(port)])
    assert stop.value.code == 2
    assert f"sketch-rnn: error: cannot listen on 127.0.0.1:{port}: " in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        main(["serve", "--out", str(out), "--port", "70000"])
    assert "--port must be in [0, 65535], got 70000" in capsys.readouterr().err
