"""What a reader sees: result tables and figures, human names, the paper's published tables beside
ours, the sweeps, the generated conclusions, the notebooks' logging, and the HTML pages."""
