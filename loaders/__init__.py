"""Documents in: file type -> LangChain loader, splitting into chunks, file discovery.

``iter_files`` finds the files, ``load_file`` turns one into Documents (or a ``LoadError`` that
names the file, what is wrong and what to do), ``split_documents`` cuts them into chunks that
keep their offsets, and ``document_id`` is the stable id of a source. ``sql_units`` makes the
rows of a SQL query sources, under the id prefix ``sql_scope``.
"""

from loaders.files import SUPPORTED_SUFFIXES, LoadError, document_id, load_file
from loaders.split import split_documents
from loaders.sql import sql_scope, sql_units
from loaders.walk import iter_files

__all__ = [
    "SUPPORTED_SUFFIXES",
    "LoadError",
    "document_id",
    "iter_files",
    "load_file",
    "split_documents",
    "sql_scope",
    "sql_units",
]
