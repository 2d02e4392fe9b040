"""Where a model looks: attention over frames (attention), Grad-CAM in the image (saliency), and
the per-frame and per-region truth a prepared study can score them against (truth)."""
