//! Interrupts (the GIC driver comes here).

/// Handle an IRQ taken through the vectors.
pub fn handle_irq() {}
