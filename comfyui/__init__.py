"""Luna Multi Saver, a ComfyUI node pack: saves images locally or hands them to luna-daemon."""

from .luna_multi_saver.node import LunaMultiSaver

NODE_CLASS_MAPPINGS = {"LunaMultiSaver": LunaMultiSaver}
NODE_DISPLAY_NAME_MAPPINGS = {"LunaMultiSaver": "Luna Multi Saver"}

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
