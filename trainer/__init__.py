"""The embedded LoRA trainer (LoRA, LoCon, LoHa, LoKr, DoRA).

Uses the lorasel core (toy world, checkpoint writing); never the UI.
"""
