package sdk

import (
	"fmt"
	"slices"
	"strings"

	"github.com/chronoforge/chronoforge/storage"
)

// MaxUserName is the longest step, wait or value name a user may give, in bytes. It leaves
// room for the prefixes the SDK adds to record names.
const MaxUserName = 100

// MaxValueSize is the largest encoded durable value, in bytes.
const MaxValueSize = 16 << 10

// validateUserName checks a user-given step, wait or value name: non-empty, at most
// MaxUserName bytes, no control characters and no '$'.
func validateUserName(what, name string) error {
	if len(name) > MaxUserName {
		return fmt.Errorf("%w: %s name %.32q... is %d bytes, longer than %d", ErrInvalid, what, name, len(name), MaxUserName)
	}
	if err := storage.ValidateStepName(name); err != nil {
		return fmt.Errorf("%s name: %w", what, err)
	}
	if strings.ContainsRune(name, '$') {
		return fmt.Errorf("%w: %s name %q contains '$', which is reserved", ErrInvalid, what, name)
	}
	return nil
}

// validateUserKey checks a workflow key given to Start: a valid storage key without '$',
// which is reserved for the keys of branch children.
func validateUserKey(key string) error {
	if err := storage.ValidateKey(key); err != nil {
		return err
	}
	if strings.ContainsRune(key, '$') {
		return fmt.Errorf("%w: workflow key %q contains '$', which is reserved for child workflows", ErrInvalid, key)
	}
	return nil
}

func sortStrings(s []string) { slices.Sort(s) }
