package localpg

import (
	"errors"
	"strings"
	"testing"
)

// With no server binaries anywhere, Start says what to do.
func TestStartWithoutBinariesSaysWhatToDo(t *testing.T) {
	saved := postgresBinPatterns
	postgresBinPatterns = nil
	t.Cleanup(func() { postgresBinPatterns = saved })
	t.Setenv("PATH", t.TempDir())

	_, err := Start(t.Context(), t.TempDir(), Options{})
	if !errors.Is(err, ErrNoBinaries) {
		t.Fatalf("want ErrNoBinaries, got %v", err)
	}
	for _, want := range []string{"no PostgreSQL server binaries", "install PostgreSQL", "DATABASE_URL", "docker compose up -d db"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the error does not mention %q:\n%v", want, err)
		}
	}
}
