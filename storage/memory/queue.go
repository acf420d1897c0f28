package memory

import (
	"cmp"
	"slices"
	"sort"
)

// entry is one workflow in a queue: its time as Unix microseconds (the store keeps times to
// the microsecond) and its ID, which breaks ties so that every entry is distinct.
type entry struct {
	at int64
	id int64
}

func (a entry) less(b entry) bool {
	return a.at < b.at || (a.at == b.at && a.id < b.id)
}

func (a entry) compare(b entry) int {
	if c := cmp.Compare(a.at, b.at); c != 0 {
		return c
	}
	return cmp.Compare(a.id, b.id)
}

// chunkMax is the most entries one chunk of a queue holds before it splits in two.
const chunkMax = 512

// queue is a set of entries kept in (at, id) order: a list of sorted chunks of at most
// chunkMax entries. Insert and remove cost a binary search over the chunks and a copy within
// one chunk, so they stay cheap at hundreds of thousands of entries, where one sorted slice
// would move the whole tail on every insert; walking in order is walking the chunks.
type queue struct {
	chunks [][]entry // each sorted and non-empty, in order
	n      int
}

// chunkFor returns the index of the chunk e belongs in: the first whose last entry is not
// less than e, or the last chunk when e is greater than every entry. The queue is not empty.
func (q *queue) chunkFor(e entry) int {
	i := sort.Search(len(q.chunks), func(i int) bool {
		c := q.chunks[i]
		return !c[len(c)-1].less(e)
	})
	return min(i, len(q.chunks)-1)
}

// insert adds e, which must not be in the queue yet.
func (q *queue) insert(e entry) {
	q.n++
	if len(q.chunks) == 0 {
		q.chunks = append(q.chunks, []entry{e})
		return
	}
	i := q.chunkFor(e)
	c := q.chunks[i]
	j := sort.Search(len(c), func(j int) bool { return !c[j].less(e) })
	c = slices.Insert(c, j, e)
	if len(c) <= chunkMax {
		q.chunks[i] = c
		return
	}
	// Split: the upper half gets a backing array of its own, so later inserts into the lower
	// half cannot overwrite it.
	half := len(c) / 2
	upper := slices.Clone(c[half:])
	q.chunks[i] = c[:half]
	q.chunks = slices.Insert(q.chunks, i+1, upper)
}

// remove deletes e and reports whether it was there.
func (q *queue) remove(e entry) bool {
	if len(q.chunks) == 0 {
		return false
	}
	i := q.chunkFor(e)
	c := q.chunks[i]
	j := sort.Search(len(c), func(j int) bool { return !c[j].less(e) })
	if j == len(c) || c[j] != e {
		return false
	}
	q.n--
	c = slices.Delete(c, j, j+1)
	if len(c) == 0 {
		q.chunks = slices.Delete(q.chunks, i, i+1)
	} else {
		q.chunks[i] = c
	}
	return true
}

// ascend calls fn for each entry in order until fn returns false. fn must not change the
// queue.
func (q *queue) ascend(fn func(entry) bool) {
	for _, c := range q.chunks {
		for _, e := range c {
			if !fn(e) {
				return
			}
		}
	}
}

// len returns the number of entries.
func (q *queue) len() int { return q.n }
