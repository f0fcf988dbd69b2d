package seeds_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/logline/logline/seeds"
)

// The committed seed files are what the sources under guests/ generate.
func TestGeneratedSeedsAreCurrent(t *testing.T) {
	for name, gen := range seeds.Generated {
		want, err := gen("..")
		require.NoError(t, err)
		got, err := os.ReadFile(filepath.Join("..", name))
		require.NoError(t, err)
		require.Equal(t, string(want), string(got), "%s is stale: run `go run ./tools/seedgen` (make seeds)", name)
	}
}
