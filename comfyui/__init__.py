"""Luna Multi Saver, a ComfyUI node pack: saves images locally or hands them to luna-daemon."""

from .luna_multi_saver.node import LunaMultiSaver, start_prewarm

NODE_CLASS_MAPPINGS = {"LunaMultiSaver": LunaMultiSaver}
NODE_DISPLAY_NAME_MAPPINGS = {"LunaMultiSaver": "Luna Multi Saver"}

# Warm the daemon connection in the background while ComfyUI loads (see start_prewarm).
start_prewarm()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
