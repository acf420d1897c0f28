package sdk

// SetCancelBatch sets how many children one storage call of Cancel WithChildren cancels, so
// tests can show the cost per batch with small trees.
func SetCancelBatch(e *Engine, n int) { e.cancelBatch = n }
