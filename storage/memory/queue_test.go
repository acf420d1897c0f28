package memory

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestQueueOrder: random inserts and removes, enough to split chunks many times over, leave
// the queue holding exactly the entries a sorted model holds, in order.
func TestQueueOrder(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(7, 11))
	var q queue
	var model []entry
	for i := range 20_000 {
		if len(model) > 0 && rng.IntN(3) == 0 {
			e := model[rng.IntN(len(model))]
			require.True(t, q.remove(e), "remove of a stored entry")
			require.False(t, q.remove(e), "a second remove")
			i, _ := slices.BinarySearchFunc(model, e, entry.compare)
			model = slices.Delete(model, i, i+1)
			continue
		}
		// Few distinct times, so ties are broken by ID; some appends, some inserts in front.
		e := entry{at: int64(rng.IntN(50)), id: int64(i)}
		q.insert(e)
		j, _ := slices.BinarySearchFunc(model, e, entry.compare)
		model = slices.Insert(model, j, e)
	}
	var got []entry
	q.ascend(func(e entry) bool { got = append(got, e); return true })
	require.Equal(t, model, got)
	require.Equal(t, len(model), q.len())
	for _, c := range q.chunks {
		require.NotEmpty(t, c)
		require.LessOrEqual(t, len(c), chunkMax)
	}
	require.False(t, q.remove(entry{at: 99, id: -1}), "remove of an entry never stored")
}
