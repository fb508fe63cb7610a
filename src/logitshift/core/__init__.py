"""The core: what every other wing stands on.

One forward pass (``capture``), the scores explained (``scores``), where maps are aimed
(``targets``), how maps are measured (``metrics``), models, images, class names and labels,
devices, run folders (``files``), map display and figures. Nothing here knows about shifts,
audits or commands.
"""
