package key

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPrivate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "machine.key")
	p, created, err := LoadOrCreatePrivate(path)
	if err != nil || !created {
		t.Fatalf("create: %v %v", created, err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v; want 0600", fi.Mode(), err)
	}
	again, created, err := LoadOrCreatePrivate(path)
	if err != nil || created || again.Raw() != p.Raw() {
		t.Fatalf("reload: created=%v err=%v same=%v", created, err, again.Raw() == p.Raw())
	}
	if !p.MachinePublic().Equal(again.MachinePublic()) || p.NodePublic().IsZero() {
		t.Fatal("public halves differ")
	}
	if strings.Contains(p.String(), p.Text()[len(PrivatePrefix):]) {
		t.Fatal("String shows the private key")
	}
	secret := p.Text()[len(PrivatePrefix):]
	for _, bad := range []string{"", "privkey:zz", "mkey:" + secret, "privkey:" + secret[:60]} {
		_, err := ParsePrivate(bad)
		if err == nil {
			t.Fatalf("ParsePrivate(%q) accepted", bad)
		}
		if strings.Contains(err.Error(), secret[:16]) {
			t.Fatalf("error quotes key material: %v", err)
		}
	}
	if err := os.WriteFile(path, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreatePrivate(path); err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("corrupt key file: %v", err)
	}
}
