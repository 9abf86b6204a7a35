"""dustspot trainer: synthetic data, training, export (imports torch; shared/ never imports this)."""
