"""The parse stage: format detection, multi-line grouping, and extraction into one `Event`.

Per lane (one container's stdout, or its stderr) a `Grouper` turns lines into `RawRecord`s; `Parser.parse`
turns each record into an `Event`. Modules, in the order a line meets them:

- `detect`: which format a line starts (cheap character checks first), ANSI stripping, the format tags;
- `grouping`: `RawRecord` and `Grouper` (continuations, blank lines, idle and timestamp gaps, caps);
- `extract`: `Parser`, dispatch to the readers, the raw fallback, JSON decoding;
- readers: `dify` (api/worker/beat, gunicorn, old Celery, banner), `plugin` (plugin daemon, gorm, old Go
  log), `access` (nginx, gin, squid, HTTP fields), `others` (postgres, redis, sandbox, weaviate, any JSON),
  `llm` (LLM debug blocks);
- shared: `errors` (error_type, timeout_kind, req_id), `levels`, `numbers` (tolerant number reading),
  `mapping` (operators' JSON mappings).
"""

from logpipe.parsers.detect import FORMATS
from logpipe.parsers.extract import Parser
from logpipe.parsers.grouping import Grouper, RawRecord

__all__ = ["FORMATS", "Grouper", "Parser", "RawRecord"]
