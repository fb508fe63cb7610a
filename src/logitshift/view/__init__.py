"""How maps are shown: input-size maps, overlays and ``.npz`` map files (``display``), figures (``figures``).

Above the methods (it upsamples their maps), below the commands that write figures.
"""
