package conventions

import (
	"bytes"
	"encoding/json"
	"errors"
	"go/ast"
	"go/format"
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
)

// maxLines is the hard limit for a hand-written Go file; the style target is ~800.
const maxLines = 1000

// purePackages are the package patterns that must stay free of kernel-facing
// libraries, so that they run and test anywhere, without root.
var purePackages = []string{"./policy/...", "./controlplane/..."}

// kernelImports are the module paths (and everything below them) that purePackages
// must not import, directly or transitively.
var kernelImports = []string{
	"github.com/vishvananda/netlink",
	"golang.zx2c4.com/wireguard/wgctrl",
	"github.com/cilium/ebpf",
	"github.com/strongswan/govici",
}

// goFile is one Go source file of the repository, outside testdata.
type goFile struct {
	rel  string // slash-separated path from the module root
	dir  string // slash-separated directory from the module root
	src  []byte
	ast  *ast.File // nil if the file does not parse
	err  error     // parse error
	test bool      // *_test.go
}

// tree is the module as the tests see it, read once for all of them.
type tree struct {
	root  string
	files []goFile
}

var repo = sync.OnceValues(loadRepo)

// moduleRoot walks up from the working directory to the directory holding go.mod.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory")
		}
		dir = parent
	}
}

// skipDir reports whether the go command would ignore a directory of this name.
func skipDir(name string) bool {
	return name == "testdata" || name == "vendor" || name == "bin" ||
		strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_")
}

func loadRepo() (tree, error) {
	root, err := moduleRoot()
	if err != nil {
		return tree{}, err
	}
	var files []goFile
	fset := token.NewFileSet()
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path == root {
				return nil
			}
			if skipDir(d.Name()) {
				return filepath.SkipDir
			}
			if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil {
				return filepath.SkipDir // another module
			}
			return nil
		}
		if !strings.HasSuffix(d.Name(), ".go") || strings.HasPrefix(d.Name(), ".") ||
			strings.HasPrefix(d.Name(), "_") {
			return nil
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		f, perr := parser.ParseFile(fset, rel, src, parser.ParseComments)
		if perr != nil {
			f = nil
		}
		files = append(files, goFile{
			rel:  rel,
			dir:  pathDir(rel),
			src:  src,
			ast:  f,
			err:  perr,
			test: strings.HasSuffix(d.Name(), "_test.go"),
		})
		return nil
	})
	return tree{root, files}, err
}

func pathDir(rel string) string {
	if i := strings.LastIndexByte(rel, '/'); i >= 0 {
		return rel[:i]
	}
	return "."
}

func load(t *testing.T) (string, []goFile) {
	t.Helper()
	tr, err := repo()
	if err != nil {
		t.Fatalf("walking the repository: %v", err)
	}
	if len(tr.files) == 0 {
		t.Fatalf("no Go files under %s", tr.root)
	}
	return tr.root, tr.files
}

// ignored reports whether a file is excluded from every build (//go:build ignore),
// like the generator programs that live next to the package they generate for.
func ignored(f *ast.File) bool {
	for _, cg := range f.Comments {
		if cg.Pos() > f.Package {
			break
		}
		for _, c := range cg.List {
			if strings.TrimSpace(c.Text) == "//go:build ignore" {
				return true
			}
		}
	}
	return false
}

func TestParse(t *testing.T) {
	_, files := load(t)
	for _, f := range files {
		if f.err != nil {
			t.Errorf("%s does not parse: %v", f.rel, f.err)
		}
	}
}

// TestPackageDocs checks that every package has its doc comment in exactly one file.
func TestPackageDocs(t *testing.T) {
	_, files := load(t)
	type pkg struct {
		name     string
		docFiles []string
		badDocs  []string
	}
	pkgs := map[string]*pkg{} // by directory
	for _, f := range files {
		if f.test || f.ast == nil || ignored(f.ast) {
			continue
		}
		p := pkgs[f.dir]
		if p == nil {
			p = &pkg{name: f.ast.Name.Name}
			pkgs[f.dir] = p
		}
		if f.ast.Doc == nil || ast.IsGenerated(f.ast) {
			continue
		}
		p.docFiles = append(p.docFiles, f.rel)
		if !docStartOK(f.ast.Name.Name, f.dir, f.ast.Doc.Text()) {
			p.badDocs = append(p.badDocs, f.rel)
		}
	}
	dirs := make([]string, 0, len(pkgs))
	for dir := range pkgs {
		dirs = append(dirs, dir)
	}
	sort.Strings(dirs)
	for _, dir := range dirs {
		p := pkgs[dir]
		switch {
		case len(p.docFiles) == 0:
			t.Errorf("%s: package %s has no doc comment; add \"// Package %s ...\" directly above the package clause in one file (doc.go)",
				dir, p.name, p.name)
		case len(p.docFiles) > 1:
			t.Errorf("%s: package %s has doc comments in %d files (%s); keep exactly one",
				dir, p.name, len(p.docFiles), strings.Join(p.docFiles, ", "))
		}
		for _, rel := range p.badDocs {
			if p.name == "main" {
				t.Errorf("%s: the doc comment should start with \"Command %s\" or \"%s\"", rel, base(dir), base(dir))
			} else {
				t.Errorf("%s: the doc comment should start with \"Package %s \"", rel, p.name)
			}
		}
	}
}

func base(dir string) string { return dir[strings.LastIndexByte(dir, '/')+1:] }

// docStartOK reports whether a package doc comment starts the way godoc expects:
// "Package name ..." for a library, "Command name ...", "name ..." or any
// "Package main"/"Command" form for a command.
func docStartOK(name, dir, doc string) bool {
	if name != "main" {
		return strings.HasPrefix(doc, "Package "+name+" ") || strings.HasPrefix(doc, "Package "+name+"\n")
	}
	for _, prefix := range []string{"Command ", "Package main", base(dir)} {
		if strings.HasPrefix(doc, prefix) {
			return true
		}
	}
	return false
}

// TestGofmt checks that every Go file is as gofmt would write it.
func TestGofmt(t *testing.T) {
	_, files := load(t)
	for _, f := range files {
		if f.err != nil {
			continue // TestParse reports it
		}
		out, err := format.Source(f.src)
		if err != nil {
			t.Errorf("%s: formatting: %v", f.rel, err)
			continue
		}
		if !bytes.Equal(out, f.src) {
			t.Errorf("%s is not gofmt-formatted; run gofmt -w %s", f.rel, f.rel)
		}
	}
}

// TestFileLength keeps hand-written files small enough to read; generated ones are exempt.
func TestFileLength(t *testing.T) {
	_, files := load(t)
	for _, f := range files {
		if f.ast != nil && ast.IsGenerated(f.ast) {
			continue
		}
		if n := bytes.Count(f.src, []byte("\n")); n > maxLines {
			t.Errorf("%s has %d lines, over the limit of %d (aim for ~800): split it by what its parts are for",
				f.rel, n, maxLines)
		}
	}
}

// TestPureImports keeps kernel-facing libraries out of the pure packages, directly, via
// another package of the module, or via a third-party package; test imports included.
func TestPureImports(t *testing.T) {
	root, _ := load(t)
	goCmd, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to list imports: %v", err)
	}
	args := append([]string{"list", "-e", "-json=ImportPath,Deps,Imports,TestImports,XTestImports"}, purePackages...)
	cmd := exec.Command(goCmd, args...)
	cmd.Dir = root
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.Bytes())
	}
	type listed struct {
		ImportPath   string
		Deps         []string
		Imports      []string
		TestImports  []string
		XTestImports []string
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	n := 0
	for {
		var p listed
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("decoding go list output: %v", err)
		}
		n++
		reported := map[string]bool{}
		for _, group := range []struct {
			how   string
			paths []string
		}{
			{"imports", p.Imports},
			{"imports in tests", p.TestImports},
			{"imports in tests", p.XTestImports},
			{"depends (through another package) on", p.Deps},
		} {
			for _, dep := range group.paths {
				if banned := kernelImport(dep); banned != "" && !reported[dep] {
					reported[dep] = true
					t.Errorf("%s %s %s: pure packages must not touch the kernel (%s); that code belongs under datapath/ or xfrm/",
						p.ImportPath, group.how, dep, banned)
				}
			}
		}
	}
	t.Logf("checked %d packages matching %s", n, strings.Join(purePackages, " "))
}

// kernelImport returns the banned module that path belongs to, or "".
func kernelImport(path string) string {
	for _, banned := range kernelImports {
		if path == banned || strings.HasPrefix(path, banned+"/") {
			return banned
		}
	}
	return ""
}

func TestKernelImport(t *testing.T) {
	for path, want := range map[string]string{
		"github.com/vishvananda/netlink":            "github.com/vishvananda/netlink",
		"github.com/vishvananda/netlink/nl":         "github.com/vishvananda/netlink",
		"github.com/vishvananda/netlinkish":         "",
		"golang.zx2c4.com/wireguard/wgctrl/wgtypes": "golang.zx2c4.com/wireguard/wgctrl",
		"golang.zx2c4.com/wireguard/tun":            "",
		"github.com/cilium/ebpf/link":               "github.com/cilium/ebpf",
		"github.com/strongswan/govici/vici":         "github.com/strongswan/govici",
		"net/netip":                                 "",
	} {
		if got := kernelImport(path); got != want {
			t.Errorf("kernelImport(%q) = %q, want %q", path, got, want)
		}
	}
}

func TestDocStart(t *testing.T) {
	for _, tc := range []struct {
		name, dir, doc string
		want           bool
	}{
		{"store", "controlplane/store", "Package store defines ...", true},
		{"store", "controlplane/store", "Package storage defines ...", false},
		{"store", "controlplane/store", "Store is ...", false},
		{"main", "cmd/cvlan-agent", "Command cvlan-agent runs ...", true},
		{"main", "cmd/cvlan-agent", "cvlan-agent runs ...", true},
		{"main", "cmd/cvlanctl", "Package main is ...", true},
		{"main", "cmd/cvlanctl", "This is ...", false},
	} {
		if got := docStartOK(tc.name, tc.dir, tc.doc); got != tc.want {
			t.Errorf("docStartOK(%q, %q, %q) = %v, want %v", tc.name, tc.dir, tc.doc, got, tc.want)
		}
	}
}
