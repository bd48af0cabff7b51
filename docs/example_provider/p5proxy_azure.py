"""p5proxy-azure: an example third-party provider plugin.

Provider type `azure-openai`: Azure OpenAI's dated deployments API. The wire format is OpenAI
Chat Completions, so everything is inherited from the bundled `openai` provider; only the URL
(`{base_url}/openai/deployments/{deployment}/chat/completions?api-version=...`) and the key
header (`api-key` instead of `Authorization: Bearer`) differ. The upstream model name of a
route is the deployment name.

    providers:
      azure:
        type: azure-openai
        base_url: https://my-resource.openai.azure.com
        api_key: ${AZURE_OPENAI_API_KEY}
        api_version: "2024-10-21"        # optional
    models:
      gpt-4o: {provider: azure, model: my-gpt-4o-deployment}

(Azure's newer v1 API, `base_url: https://my-resource.openai.azure.com/openai/v1`, needs no
plugin: it is a plain `type: openai` row.)
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from p5proxy import hookimpl
from p5proxy.canonical import ChatRequest
from p5proxy.config import Config, ProviderConfig
from p5proxy.provider import Route, UpstreamRequest
from p5proxy_plugins.provider_openai import OpenAIProvider

__all__ = ["AzureOpenAIProvider"]

DEFAULT_API_VERSION = "2024-10-21"


class AzureOpenAIProvider(OpenAIProvider):
    def __init__(self, config: ProviderConfig, settings: Config) -> None:
        super().__init__(config, settings)
        self.api_version = str(config.options.get("api_version", DEFAULT_API_VERSION))

    def build_request(self, req: ChatRequest, route: Route) -> UpstreamRequest:
        ureq = super().build_request(req, route)
        deployment = quote(route.upstream_model, safe="")
        ureq.url = (f"{self.config.base_url}/openai/deployments/{deployment}/chat/completions"
                    f"?api-version={quote(self.api_version, safe='')}")
        return ureq

    def auth_headers(self, key: str) -> dict[str, str]:
        # the gateway picks the key (rotation, cooldowns) and adds these headers
        return {"api-key": key}


@hookimpl
def p5proxy_register_providers(register: Any, config: Config) -> None:
    register("azure-openai", AzureOpenAIProvider)
