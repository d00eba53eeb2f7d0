"""Assignment: which lead gets which arm (angle × prompt version × model), with what probability."""
