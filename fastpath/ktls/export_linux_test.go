package ktls

func cryptoInfoForTest(k Keys) ([]byte, error) { return cryptoInfo(k) }

func asUnsupported(err error, target **UnsupportedError) bool {
	return errorsAs(err, target)
}
