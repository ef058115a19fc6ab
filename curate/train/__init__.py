"""LoRA trainer for evaluating selections (peft); torch is imported lazily."""
