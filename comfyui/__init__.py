"""Luna Multi Saver, a ComfyUI node pack: saves images locally or hands them to luna-daemon."""

from .luna_multi_saver.node import LunaMultiSaver, start_prewarm
from .luna_multi_saver.ui_bridge import register_routes

NODE_CLASS_MAPPINGS = {"LunaMultiSaver": LunaMultiSaver}
NODE_DISPLAY_NAME_MAPPINGS = {"LunaMultiSaver": "Luna Multi Saver"}
# The frontend extension: daemon saves shown on the node as they finish, workflows restored from our JPEG files.
WEB_DIRECTORY = "./luna_multi_saver/web"

# Warm the daemon connection in the background while ComfyUI loads (see start_prewarm), and add the route the
# frontend extension asks for a job's state (ui_bridge.JOB_ROUTE; nothing without ComfyUI's server).
start_prewarm()
register_routes()

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
