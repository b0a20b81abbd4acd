"""`scadawatch token create | list | revoke` and the token store in a site's data_dir."""

from __future__ import annotations

import concurrent.futures
import stat
import time
from pathlib import Path

import pytest
from conftest import CliRun

from api.tokens import TokenStore


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "site.toml"
    path.write_text('[site]\nname = "tokens"\ndata_dir = "data"\n')
    return path


@pytest.fixture
def store(tmp_path: Path) -> TokenStore:
    return TokenStore(tmp_path / "data")


def test_create_list_revoke(cli: CliRun, config: Path, store: TokenStore) -> None:
    code, viewer, err = cli("token", "create", "--role", "viewer", "--config", config)
    assert code == 0 and "'viewer-1' (viewer, no expiry)" in err and "shown only now" in err
    code, admin, _ = cli("token", "create", "--role", "admin", "--name", "ops.anna",
                         "--expires", "30", "--config", config)
    assert code == 0
    viewer, admin = viewer.strip(), admin.strip()
    assert viewer.startswith("sw_") and len(viewer) == 46 and viewer != admin
    assert store.check(viewer).role == "viewer" and store.check(admin).role == "admin"

    code, listing, _ = cli("token", "list", "--config", config)
    assert code == 0
    header, *rows = listing.splitlines()
    assert header.split() == ["NAME", "ROLE", "CREATED", "EXPIRES", "TOKEN"]
    assert [r.split()[:2] for r in rows] == [["viewer-1", "viewer"], ["ops.anna", "admin"]]
    assert rows[0].split()[3:] == ["never", f"sw_...{viewer[-4:]}"]
    assert rows[1].split()[3].endswith("Z")
    assert viewer not in listing and admin not in listing and viewer[3:-4] not in listing

    code, _, err = cli("token", "revoke", "ops.anna", "--config", config)
    assert (code, err.strip()) == (0, "token 'ops.anna' (admin) revoked")
    assert store.check(admin) is None and store.check(viewer) is not None
    assert admin[3:] not in store.path.read_text()  # only hashes are kept


def test_the_store_is_private_and_holds_only_hashes(cli: CliRun, config: Path,
                                                     store: TokenStore) -> None:
    secret = cli("token", "create", "--role", "operator", "--config", config)[1].strip()
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert secret[3:] not in store.path.read_text()


@pytest.mark.parametrize(("argv", "message"), [
    (["create", "--role", "boss"],
     "role 'boss' is unknown: use viewer, operator, engineer or admin"),
    (["create", "--role", "viewer", "--name", "two words"], "name 'two words': use 1-64"),
    (["create", "--role", "viewer", "--expires", "0"], "expiry 0 days: must be more than 0"),
    (["create", "--role", "viewer", "--expires", "inf"], "expiry inf days"),
    (["create", "--role", "viewer", "--name", "taken"], "a token named 'taken' exists"),
    (["revoke", "nobody"], "no token named 'nobody' (tokens: taken)"),
])
def test_bad_input_exits_2_naming_it(cli: CliRun, config: Path, store: TokenStore,
                                     argv: list[str], message: str) -> None:
    store.create("viewer", "taken")
    code, out, err = cli("token", *argv, "--config", config)
    assert (code, out) == (2, "")
    assert err.startswith("scadawatch token: error: ") and message in err, err
    assert [t.name for t in store.read()] == ["taken"]


@pytest.mark.parametrize(("argv", "message"), [
    (["create"], "the following arguments are required: --role"),
    (["create", "--role", "viewer", "--expires", "soon"], "invalid float value: 'soon'"),
    (["list"], "the following arguments are required: --config"),
    (["rotate"], "invalid choice: 'rotate'"),
])
def test_usage_errors_exit_2(cli: CliRun, config: Path, capsys: pytest.CaptureFixture[str],
                            argv: list[str], message: str) -> None:
    extra = [] if argv == ["list"] else ["--config", str(config)]
    with pytest.raises(SystemExit) as exit_:  # argparse's own exit
        cli("token", *argv, *extra)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_an_invalid_site_file_or_store_exits_2(cli: CliRun, config: Path,
                                               store: TokenStore) -> None:
    store.path.parent.mkdir()
    store.path.write_text("{not json")
    code, _, err = cli("token", "list", "--config", config)
    assert code == 2 and f"{store.path}: not a token store" in err
    config.write_text("[site]\n")
    code, _, err = cli("token", "list", "--config", config)
    assert code == 2 and "site.name: required key is missing" in err


def test_expired_tokens_are_listed_as_such(cli: CliRun, config: Path,
                                           store: TokenStore) -> None:
    store.create("viewer", "old", expires_days=1, now=time.time() - 3 * 86400)
    listing = cli("token", "list", "--config", config)[1]
    assert listing.splitlines()[1].split()[-2] == "(expired)"


def test_concurrent_creates_lose_nothing(store: TokenStore) -> None:
    """Writers take a lock: two `token create` at once both land."""
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        secrets = list(pool.map(lambda i: store.create("viewer", f"t{i}")[1], range(40)))
    assert sorted(t.name for t in store.read()) == sorted(f"t{i}" for i in range(40))
    assert all(store.check(s) is not None for s in secrets)


def test_an_empty_store_lists_nothing(cli: CliRun, config: Path) -> None:
    code, out, err = cli("token", "list", "--config", config)
    assert (code, out) == (0, "") and "no tokens in" in err
