package model

import (
	"reflect"
	"testing"
)

// TestEqualCoversEveryField: changing any one field of a service,
// endpoint, workload or node makes it unequal, so a field added to those
// structs and forgotten in equal fails here.
func TestEqualCoversEveryField(t *testing.T) {
	check := func(name string, zero any, equal func(a, b any) bool) {
		typ := reflect.TypeOf(zero).Elem()
		for i := range typ.NumField() {
			v := reflect.New(typ)
			setNonZero(v.Elem().Field(i))
			if equal(reflect.New(typ).Interface(), v.Interface()) {
				t.Errorf("%s.equal ignores field %s", name, typ.Field(i).Name)
			}
		}
		if !equal(reflect.New(typ).Interface(), reflect.New(typ).Interface()) {
			t.Errorf("%s.equal: zero values differ", name)
		}
	}
	check("Service", &Service{}, func(a, b any) bool { return a.(*Service).equal(b.(*Service)) })
	check("Endpoint", &Endpoint{}, func(a, b any) bool { return a.(*Endpoint).equal(b.(*Endpoint)) })
	check("Workload", &Workload{}, func(a, b any) bool { return a.(*Workload).equal(b.(*Workload)) })
	check("Node", &Node{}, func(a, b any) bool { return a.(*Node).equal(b.(*Node)) })
}

// setNonZero sets v to a value other than its zero value.
func setNonZero(v reflect.Value) {
	switch v.Kind() {
	case reflect.String:
		v.SetString("x")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int32, reflect.Int64:
		v.SetInt(1)
	case reflect.Uint, reflect.Uint32, reflect.Uint64:
		v.SetUint(1)
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 1, 1)
		if s.Index(0).Kind() == reflect.Pointer {
			s.Index(0).Set(reflect.New(s.Index(0).Type().Elem()))
		}
		v.Set(s)
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		m.SetMapIndex(reflect.Zero(v.Type().Key()), reflect.Zero(v.Type().Elem()))
		v.Set(m)
	default:
		panic("setNonZero: " + v.Kind().String())
	}
}
