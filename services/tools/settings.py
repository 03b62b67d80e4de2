"""Tools service settings (env prefix ``STEPAUDIO_TOOLS_``)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.kit.settings import ServiceSettings


class ToolsSettings(ServiceSettings):
    """Settings of the tools service."""

    model_config = SettingsConfigDict(env_prefix="STEPAUDIO_TOOLS_", extra="ignore")

    port: int = Field(50055, description="gRPC port.")
    default_timeout_s: float = Field(5.0, description="Timeout of a tool call when neither tool nor request sets one.")
    enable_diagnostic_tools: bool = Field(
        False, description="Register the 'wait' tool (sleeps, then answers) used to exercise slow-tool handling "
                           "(tests and local stacks; keep off in production)."
    )
