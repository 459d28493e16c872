"""Silent sign-in everywhere users run aitk, against the fake Entra ID: a service principal, workload
identity (a federated token file, as GitHub Actions and AKS provide), a managed identity endpoint
(App Service / Container Apps), then the CLIs; `aitk azure login --check` lists each and which answered,
and the cheap check doctor and the status bar use names the same source."""

from __future__ import annotations

import pytest

from test_azure import _reset_fake, fake, run_cli  # noqa: F401 (fixtures)

SP_VARS = ("AZURE_CLIENT_SECRET", "AZURE_CLIENT_CERTIFICATE_PATH", "AZURE_USERNAME")


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for v in SP_VARS + ("AZURE_FEDERATED_TOKEN_FILE", "IDENTITY_ENDPOINT", "IDENTITY_HEADER", "MSI_ENDPOINT"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv("AZURE_CONFIG_DIR", str(tmp_path / "no-az"))  # no `az login` profile
    monkeypatch.setenv("AZD_CONFIG_DIR", str(tmp_path / "no-azd"))
    monkeypatch.setenv("AITK_AZURE_NO_IMDS", "1")  # this machine is not an Azure VM
    return monkeypatch


def rows(out: str) -> dict[str, str]:
    from aitk.core import azure_signin

    got = {}
    for line in out.splitlines():
        for name in azure_signin.SOURCES:
            if line.startswith(name + " "):
                got[name] = line[len(name):].split()[0] if line[len(name):].split() else ""
    return got


def test_login_check_lists_every_source_in_order_and_the_environment_answers(fake):
    from aitk.core import azure_signin

    code, out, err = run_cli("azure", "login", "--check")
    assert code == 0, err
    got = rows(out)
    assert list(got) == list(azure_signin.SOURCES)
    assert got["environment"] == "answered" and all(v == "not" for k, v in got.items() if k != "environment")
    assert "signed in through environment" in out
    assert azure_signin.detect().source == azure_signin.ENVIRONMENT


def test_workload_identity_answers_with_a_federated_token_file(fake, clean_env, tmp_path):
    from aitk.core import azure_signin

    token_file = tmp_path / "federated-token"
    token_file.write_text("eyJ.federated.assertion")
    fake.federated_tokens.add("eyJ.federated.assertion")
    clean_env.setenv("AZURE_FEDERATED_TOKEN_FILE", str(token_file))
    code, out, err = run_cli("azure", "login", "--check")
    assert code == 0, out + err
    got = rows(out)
    assert got["environment"] == "unavailable" and got["workload identity"] == "answered"
    assert got["managed identity"] == "not"
    assert azure_signin.detect().source == azure_signin.WORKLOAD


def test_managed_identity_answers_through_the_platform_endpoint(fake, clean_env):
    from aitk.core import azure_signin
    from aitk.providers.azure import auth
    from aitk.providers.azure.clients import AzureContext

    clean_env.setenv("IDENTITY_ENDPOINT", f"{fake.url}/msi/token")
    clean_env.setenv("IDENTITY_HEADER", fake.identity_header)
    clean_env.setenv("REQUESTS_CA_BUNDLE", str(fake.ca))  # the managed identity client uses the system trust
    clean_env.delenv("AZURE_CLIENT_ID")
    code, out, err = run_cli("azure", "login", "--check")
    assert code == 0, out + err
    got = rows(out)
    assert got["environment"] == "unavailable" and got["workload identity"] == "unavailable" and got["managed identity"] == "answered"
    assert azure_signin.detect().source == azure_signin.MANAGED
    # And the chain the API calls use signs in the same way.
    subs = AzureContext(auth.credential(), fake.subscription).list_subscriptions()
    assert subs[0]["subscriptionId"] == fake.subscription


def test_nothing_answers_says_how_to_sign_in(fake, clean_env):
    clean_env.setenv("PATH", "/nonexistent")  # neither az nor azd
    code, out, _ = run_cli("azure", "login", "--check")
    assert code == 1
    got = rows(out)
    assert set(got.values()) == {"unavailable"}
    assert "device code" in out
