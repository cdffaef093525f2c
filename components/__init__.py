"""Components composing the resources."""
