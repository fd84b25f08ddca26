module github.com/oboexchange/rewriteplugin

go 1.22
