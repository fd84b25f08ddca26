module github.com/oboexchange/dialplugin

go 1.22
