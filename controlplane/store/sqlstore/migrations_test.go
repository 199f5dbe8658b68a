package sqlstore

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"testing"
)

// released are the migrations that databases in the field may have applied,
// with their SHA-256. They must never change: goose would not re-run them, so a
// changed file means old and new databases silently differ. New schema is a new
// file, numbered next, added here.
var released = []struct{ file, sha256 string }{
	{"00001_init.sql", "15a3bc72576aa07ff8aacb7c5699dbba73aebe84d1999eb8d1d5c57178f1c2af"},
	{"00002_audit_log.sql", "ae441c9f324bb413e31e880bd58f7cd01f54b44c05f22326366a9992cb9972b2"},
	{"00003_node_key_rotation.sql", "5216ac53560bdbcecf49475f2b1eb1313edd583a3152e2055fb91622b7dda1dd"},
}

func TestMigrationsAppendOnly(t *testing.T) {
	files, err := fs.Glob(migrations, "migrations/*.sql")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != len(released) {
		t.Errorf("%d migration files, %d listed in released: list every new migration (and never remove one)", len(files), len(released))
	}
	for i, r := range released {
		want := fmt.Sprintf("migrations/%05d_", i+1)
		if len(r.file) < 6 || "migrations/"+r.file[:6] != want {
			t.Errorf("migration %d is %s; want a name starting %s (numbered in order, no gaps)", i+1, r.file, want[len("migrations/"):])
		}
		b, err := fs.ReadFile(migrations, "migrations/"+r.file)
		if err != nil {
			t.Errorf("released migration %s is gone: %v", r.file, err)
			continue
		}
		if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != r.sha256 {
			t.Errorf("released migration %s changed (sha256 %x); put the change in a new migration instead", r.file, sum)
		}
	}
}
