"""Remote fine-tuning on Azure Container Apps jobs, behind the same Provider interface as local jobs.

Modules: `auth` (sign-in), `config` (endpoints, settings, the project's infra file), `clients`
(SDK clients), `errors` (Azure errors -> AitkError), `provision` (resources), `secret` (job
secrets), `files` (the file share), `run` (submit / stop / fetch), `logs` (log stream, Log
Analytics, metrics), `watch` (the detached watcher), `provider` (`AzureProvider`), `inference`
(the inference endpoint: a Container App running `aitk serve`; deploy, endpoint, app logs),
`bundle` (aitk's wheel + dependency lock, installed at job start on a public image),
`container_entry` (the script the job and the app run, from the share), `quota` (GPU quotas and
offered profiles), `reuse` (existing environments, AI Toolkit's resources), `estimate` (GPU time and cost).

Importing this package is cheap: the Azure SDK is imported by the modules that use it.
"""


def __getattr__(name):
    if name == "AzureProvider":
        from .provider import AzureProvider

        return AzureProvider
    raise AttributeError(name)
