package sdk

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/chronoforge/chronoforge/storage"
)

// keyLevel is one level of a branch tree: a Spawn (item empty) or one item of a SpawnEach
// (each set), under the branch of the level above.
type keyLevel struct {
	branch, name string
	each         bool
	item         string
}

// keyTree is a root workflow's key and the levels down to one descendant.
type keyTree struct {
	root   string
	levels []keyLevel
}

// encode derives the descendant's key with the SDK's own functions, level by level.
func (k keyTree) encode() string {
	key := k.root
	for _, l := range k.levels {
		b := &BranchScope{r: &run{wf: storage.Workflow{Key: key}}, name: l.branch}
		if l.each {
			key = b.eachPrefix(l.name) + l.item
		} else {
			key = b.spawnKey(l.name)
		}
	}
	return key
}

// decodeKey is the inverse the key format promises: split on '$', the root key first, then
// per level two non-empty components (a Spawn), followed by an empty one and the item for a
// SpawnEach. It fails on anything else.
func decodeKey(key string) (keyTree, error) {
	parts := strings.Split(key, "$")
	t := keyTree{root: parts[0]}
	for i := 1; i < len(parts); {
		if i+1 >= len(parts) || parts[i] == "" || parts[i+1] == "" {
			return keyTree{}, fmt.Errorf("level at component %d of %q: want two non-empty names", i, key)
		}
		l := keyLevel{branch: parts[i], name: parts[i+1]}
		i += 2
		if i < len(parts) && parts[i] == "" {
			if i+1 >= len(parts) || parts[i+1] == "" {
				return keyTree{}, fmt.Errorf("item at component %d of %q: want a non-empty item after the empty marker", i+1, key)
			}
			l.each, l.item = true, parts[i+1]
			i += 2
		}
		t.levels = append(t.levels, l)
	}
	return t, nil
}

func (k keyTree) String() string { return fmt.Sprintf("%q %+v", k.root, k.levels) }

// Names and items chosen to collide under the old "<name>_<item>" form and with each other.
var (
	keyNames = []string{"n", "n_0", "0", "_", "x", "sub"}
	keyItems = []string{"0", "1", "x", "n_0", "_", "0_0"}
)

func allLevels() []keyLevel {
	var out []keyLevel
	for _, b := range keyNames {
		for _, n := range keyNames {
			out = append(out, keyLevel{branch: b, name: n})
			for _, it := range keyItems {
				out = append(out, keyLevel{branch: b, name: n, each: true, item: it})
			}
		}
	}
	return out
}

// TestChildKeysAreUnambiguous proves the child key format injective: every tree of up to two
// Spawn/SpawnEach levels over names and items picked to collide (n, n_0, 0, _, ...) gets a
// key of its own, and every key, also of random trees four levels deep, decodes back to the
// one tree that made it. Under the old "<name>_<item>" form SpawnEach "n" item "0" and Spawn
// "n_0" shared a key, and an item "x$sub$gc" shared one with a grandchild.
func TestChildKeysAreUnambiguous(t *testing.T) {
	t.Parallel()
	levels := allLevels()
	seen := map[string]keyTree{}
	check := func(tree keyTree) {
		t.Helper()
		key := tree.encode()
		if prev, ok := seen[key]; ok {
			t.Fatalf("two trees share the key %q:\n%v\n%v", key, prev, tree)
		}
		seen[key] = tree
		got, err := decodeKey(key)
		require.NoError(t, err, "decode %q", key)
		require.Equal(t, tree.String(), got.String(), "decode %q", key)
	}
	for _, a := range levels {
		check(keyTree{root: "p", levels: []keyLevel{a}})
		for _, b := range levels {
			check(keyTree{root: "p", levels: []keyLevel{a, b}})
		}
	}
	rng := rand.New(rand.NewPCG(7, 11))
	for range 10_000 {
		tree := keyTree{root: keyItems[rng.IntN(len(keyItems))]}
		for range 3 + rng.IntN(2) {
			tree.levels = append(tree.levels, levels[rng.IntN(len(levels))])
		}
		key := tree.encode()
		got, err := decodeKey(key)
		require.NoError(t, err, "decode %q", key)
		require.Equal(t, tree.String(), got.String(), "decode %q", key)
	}
	t.Logf("%d distinct keys of trees up to two levels deep", len(seen))
}

// TestItemKeysAreChecked: the rules item keys of keyed sources follow, so that child keys
// stay decodable and valid.
func TestItemKeysAreChecked(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"r0001", "x_sub_gc", "ümlaut", "a b", "0", strings.Repeat("k", storage.MaxKeyLen)} {
		require.NoError(t, validateItemKey(ok), "item key %q", ok)
	}
	for _, bad := range []string{"", "x$sub$gc", "$", "a\nb", "\x00", string([]byte{0xff}), strings.Repeat("k", storage.MaxKeyLen+1)} {
		err := validateItemKey(bad)
		require.ErrorIs(t, err, ErrInvalid, "item key %q", bad)
	}
}
