"""The statistics of the study: ROC AUC with DeLong CIs and tests, Youden thresholds, prediction
tables (metrics), and the patient-level bootstrap (bootstrap)."""
