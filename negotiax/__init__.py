"""NegotiaX: align a decoder LLM to several objectives with a small negotiation circuit.

The core sits at the top (circuit, attach, backbone, saving, config, io); the stages are packages that own
their configs (data, train, generation, evaluation, judges, serve); recipe.py combines the configs,
pipeline.py the stages, and cli/ holds one thin file per `negotiax` verb.
"""
from .attach import Attachment, attach, find_decoder_layers
from .backbone import ModelConfig, load_backbone
from .circuit import Circuit, CircuitConfig
from .saving import load_circuit, save_circuit

__version__ = "0.1.0"
__all__ = ["Attachment", "Circuit", "CircuitConfig", "ModelConfig", "attach", "find_decoder_layers",
           "load_backbone", "load_circuit", "save_circuit", "__version__"]
