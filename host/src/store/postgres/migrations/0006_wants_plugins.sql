-- A released ticket whose steps wait for plugins the releasing worker lacks
-- names them: a worker that lacks every one of them leaves the ticket to one
-- that has one, rather than taking it only to let it go again.
ALTER TABLE itsm.tickets ADD COLUMN wants_plugins text[];
