"""``python -m services.riva``: Riva-compatible ASR and TTS on the platform's stages (env prefix STEPAUDIO_RIVA_)."""

from riva.client.proto import riva_asr_pb2_grpc, riva_tts_pb2_grpc

from services.kit.server import GrpcServer, ServiceSpec, run
from services.riva.server import ASR_SERVICE, TTS_SERVICE, RivaAsr, RivaTts
from services.riva.settings import RivaSettings


def build(settings: RivaSettings | None = None) -> GrpcServer:
    """The Riva-compatible server, ready to start."""
    settings = settings or RivaSettings()
    specs = [ServiceSpec(ASR_SERVICE, riva_asr_pb2_grpc.add_RivaSpeechRecognitionServicer_to_server,
                         RivaAsr(settings)),
             ServiceSpec(TTS_SERVICE, riva_tts_pb2_grpc.add_RivaSpeechSynthesisServicer_to_server, RivaTts(settings))]
    return GrpcServer("riva", settings, specs)


if __name__ == "__main__":
    run(build())
