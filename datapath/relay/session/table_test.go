package session

import (
	"errors"
	"slices"
	"testing"
)

func ids(ss []*Session) []ID {
	var out []ID
	for _, s := range ss {
		out = append(out, s.ID())
	}
	return out
}

func apply(t *testing.T, tb *Table, specs ...Spec) Change {
	t.Helper()
	c, err := tb.Diff(specs, t0)
	if err != nil {
		t.Fatalf("Diff: %v", err)
	}
	tb.Apply(c.Remove, c.Add)
	return c
}

func TestTable(t *testing.T) {
	tb := NewTable()
	s1 := testSpec()
	s2 := Spec{ID: 2, Ports: [2]uint16{50001, 50002}, Tokens: [2]Token{testToken(3), testToken(4)}}

	c := apply(t, tb, s2, s1)
	if got := ids(c.Add); !slices.Equal(got, []ID{2, s1.ID}) || len(c.Remove) != 0 {
		t.Fatalf("first change adds %v removes %v", got, ids(c.Remove))
	}
	if _, err := tb.Diff([]Spec{s1, s2}, t0); !errors.Is(err, ErrNoChanges) {
		t.Errorf("same sessions again: %v, want ErrNoChanges", err)
	}
	s, side, ok := tb.Lookup(50002)
	if !ok || s.ID() != 2 || side != SideB {
		t.Errorf("Lookup(50002) = %v %v %v", s, side, ok)
	}

	// Binding state survives a Set that keeps the session.
	first, _ := tb.Get(s1.ID)
	if _, _, err := tb.Bind(s1.Ports[SideA], bindPacket(s1, SideA, 1), epA, t0); err != nil {
		t.Fatal(err)
	}
	if _, _, err := tb.Bind(60000, bindPacket(s1, SideA, 2), epA, t0); !errors.Is(err, ErrUnknownSession) {
		t.Errorf("bind on a port no session owns: %v", err)
	}

	// s2 changes its token: replaced. s1 kept, with its binding.
	s2b := s2
	s2b.Tokens[SideB] = testToken(5)
	c = apply(t, tb, s1, s2b)
	if !slices.Equal(ids(c.Add), []ID{2}) || !slices.Equal(ids(c.Remove), []ID{2}) {
		t.Errorf("token change: adds %v removes %v, want 2 replaced", ids(c.Add), ids(c.Remove))
	}
	if kept, _ := tb.Get(s1.ID); kept != first {
		t.Error("unchanged session replaced")
	} else if _, ok := kept.Peer(SideA); !ok {
		t.Error("unchanged session lost its binding")
	}

	// A port moves from one session to another in one change.
	s3 := Spec{ID: 3, Ports: [2]uint16{50001, 50003}, Tokens: [2]Token{testToken(6), testToken(7)}}
	c = apply(t, tb, s3)
	if !slices.Equal(ids(c.Add), []ID{3}) || !slices.Equal(ids(c.Remove), []ID{2, s1.ID}) {
		t.Errorf("replace all: adds %v removes %v", ids(c.Add), ids(c.Remove))
	}
	if s, side, ok := tb.Lookup(50001); !ok || s.ID() != 3 || side != SideA {
		t.Errorf("port 50001 after the move: %v %v %v", s, side, ok)
	}
	if _, _, ok := tb.Lookup(50002); ok {
		t.Error("port 50002 still owned after its session went")
	}
	if tb.Len() != 1 || len(tb.Sessions()) != 1 {
		t.Errorf("Len = %d, want 1", tb.Len())
	}
}

func TestDiffInvalid(t *testing.T) {
	good := testSpec()
	bad := func(f func(*Spec)) Spec { s := good; f(&s); return s }
	other := Spec{ID: 9, Ports: [2]uint16{1, 2}, Tokens: [2]Token{testToken(8), testToken(9)}}
	for name, specs := range map[string][]Spec{
		"port 0":         {bad(func(s *Spec) { s.Ports[SideB] = 0 })},
		"same ports":     {bad(func(s *Spec) { s.Ports[SideB] = s.Ports[SideA] })},
		"zero token":     {bad(func(s *Spec) { s.Tokens[SideA] = Token{} })},
		"same tokens":    {bad(func(s *Spec) { s.Tokens[SideB] = s.Tokens[SideA] })},
		"duplicate id":   {good, bad(func(s *Spec) { s.Ports = [2]uint16{7, 8} })},
		"port collision": {good, bad(func(s *Spec) { s.ID = 9; s.Ports[SideA] = 1; s.Ports[SideB] = good.Ports[SideB] })},
		"valid then bad": {other, bad(func(s *Spec) { s.Ports[SideA] = 0 })},
	} {
		tb := NewTable()
		if _, err := tb.Diff(specs, t0); !errors.Is(err, ErrInvalidSpec) {
			t.Errorf("%s: Diff = %v, want ErrInvalidSpec", name, err)
		}
	}
	if s := fmtToken(); s != "token(redacted)" {
		t.Errorf("a token prints as %q", s)
	}
}

func fmtToken() string { return testToken(1).String() }
