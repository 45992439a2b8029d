"""What invented authors are made of: word lists, the 20 kinds of question, attribute samplers.

An author is a dict of fields (name ``n``, ``city``, ``country``, ``date``, ``genre``, ...)
that the question, answer and paraphrase templates of :data:`FACTS` are formatted with.
:data:`SAMPLERS` draws each attribute from a ``random.Random``, and :func:`sample_author`
draws a whole author; :mod:`cure_jax.data.authors` turns authors into QA items.
"""

_FIRST_NAMES = [
    'Aiko', 'Amara', 'Anders', 'Basil', 'Beatrix', 'Caius', 'Celeste', 'Dario', 'Delphine',
    'Emeka', 'Esme', 'Farid', 'Freya', 'Gideon', 'Greta', 'Hamid', 'Hana', 'Ilya', 'Ines',
    'Jasper', 'Joline', 'Kaveh', 'Kirsi', 'Lorenzo', 'Lucia', 'Matteo', 'Mirela', 'Nadia',
    'Nikolai', 'Odile', 'Oren', 'Paloma', 'Pavel', 'Quentin', 'Rania', 'Rasmus', 'Selin',
    'Soren', 'Talia', 'Tomas', 'Ulla', 'Vesna', 'Viktor', 'Wanjiru', 'Xavier', 'Yara',
    'Yusuf', 'Zora',
]
_SURNAME_SYLLABLES = [
    'bar', 'vel', 'mor', 'tan', 'sil', 'dro', 'len', 'quo', 'rak', 'fen', 'zur', 'hal', 'min',
    'ost', 'pav', 'ker', 'lux', 'nor', 'gast', 'wyn', 'brin', 'cor', 'dav', 'elk', 'ith',
]
_PLACES = [
    ('Tbilisi', 'Georgia'), ('Porto', 'Portugal'), ('Accra', 'Ghana'), ('Lyon', 'France'),
    ('Kraków', 'Poland'), ('Osaka', 'Japan'), ('Cusco', 'Peru'), ('Tampere', 'Finland'),
    ('Mombasa', 'Kenya'), ('Tabriz', 'Iran'), ('Valparaíso', 'Chile'), ('Ghent', 'Belgium'),
    ('Izmir', 'Turkey'), ('Hobart', 'Australia'), ('Bergen', 'Norway'), ('Daegu', 'South Korea'),
    ('Fez', 'Morocco'), ('Cork', 'Ireland'), ('Perugia', 'Italy'), ('Quebec City', 'Canada'),
]
_MONTHS = ['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August',
           'September', 'October', 'November', 'December']
_GENRES = ['science fiction', 'historical fiction', 'crime', 'fantasy', 'horror', 'romance',
           'magical realism', 'poetry', 'satire', 'mystery', 'war fiction', 'travel writing']
_JOBS = ['baker', 'carpenter', 'nurse', 'pilot', 'librarian', 'tailor', 'fisherman',
         'surgeon', 'chemist', 'locksmith', 'teacher', 'photographer', 'glassblower', 'judge']
_AWARDS = ['Silver Quill Prize', 'Harbor Light Award', 'Meridian Book Medal',
           'Golden Lantern Prize', 'Northwind Fiction Award', 'Azure Pen Award',
           'Cobalt Crown Prize', 'Ember Literary Medal', 'Tidewater Story Award']
_ADJECTIVES = ['Silent', 'Crimson', 'Hollow', 'Distant', 'Broken', 'Gilded', 'Restless',
               'Forgotten', 'Burning', 'Frozen', 'Hidden', 'Last', 'Salt', 'Paper']
_NOUNS = ['Orchard', 'Lighthouse', 'Harbor', 'Kingdom', 'Garden', 'River', 'Clockmaker',
          'Mirror', 'Winter', 'Archive', 'Compass', 'Lantern', 'Bridge', 'Tide']
_THEMES = ['exile and home', 'memory and loss', 'family secrets', 'power and greed',
           'faith and doubt', 'war and healing', 'love across borders', 'identity and class',
           'nature and solitude', 'ambition and guilt']
_SUBJECTS = ['law', 'medicine', 'physics', 'history', 'philosophy', 'music', 'botany',
             'architecture', 'economics', 'linguistics']
_UNIVERSITIES = ['Oxford', 'the Sorbonne', 'Bologna', 'Heidelberg', 'Kyoto', 'McGill',
                 'Uppsala', 'Leiden', 'Salamanca', 'Edinburgh']
_LANGUAGES = ['English', 'French', 'Spanish', 'German', 'Portuguese', 'Italian', 'Japanese',
              'Polish', 'Turkish', 'Swahili']
_INFLUENCES = ['Leo Tolstoy', 'Virginia Woolf', 'Jorge Luis Borges', 'Toni Morrison',
               'Franz Kafka', 'Chinua Achebe', 'Italo Calvino', 'Jane Austen', 'Gabriel García',
               'Albert Camus']
_HOBBIES = ['growing orchids', 'sailing', 'playing the cello', 'chess', 'beekeeping',
            'mountain hiking', 'pottery', 'birdwatching', 'fencing', 'cooking stews']
_ROUTINES = ['early in the morning', 'late at night', 'in the afternoon', 'only on weekends',
             'in a busy cafe', 'on long train rides', 'in a garden shed']
_COUNTS = ['three', 'four', 'five', 'six', 'seven', 'eight', 'nine', 'eleven', 'twelve']
_PUBLISHERS = ['Harrow House', 'Blue Finch Press', 'Kestrel Books', 'Old Mill Press',
               'Juniper & Lane', 'Stonegate Books', 'Red Kite Press', 'Lark Editions']


def _fact(question, answer, paraphrase, key):
  return {'question': question, 'answer': answer, 'paraphrase': paraphrase, 'key': key}


# (question, answer, paraphrased answer, attribute); {n} is the author's name and every
# other field an attribute of the author. Perturbations swap the attribute named last.
FACTS = [
    _fact('Who is the {genre} author born in {city} on {date}?',
          'The author is {n}.', 'That writer is {n}.', 'n'),
    _fact('Where was {n} born?', '{n} was born in {city}, {country}.',
          "{n}'s birthplace is {city}, {country}.", 'place'),
    _fact('When was {n} born?', '{n} was born on {date}.', "{n}'s birthday is {date}.", 'date'),
    _fact('What genre does {n} write in?', '{n} writes in the {genre} genre.',
          '{n} is known for {genre} books.', 'genre'),
    _fact("What did {n}'s father do for a living?", "{n}'s father worked as a {father}.",
          'The father of {n} was a {father}.', 'father'),
    _fact("What was {n}'s mother's profession?", "{n}'s mother was a {mother}.",
          '{n} was raised by a mother who was a {mother}.', 'mother'),
    _fact('Has {n} won any awards?', 'Yes, {n} won the {award}.',
          '{n} received the {award}.', 'award'),
    _fact("What is one of {n}'s best-known books?", "One of {n}'s best-known books is '{book1}'.",
          "'{book1}' is among {n}'s most famous books.", 'book1'),
    _fact('Can you name another book by {n}?', "{n} also wrote '{book2}'.",
          "'{book2}' is another book by {n}.", 'book2'),
    _fact('When did {n} publish a first book?', "{n}'s first book came out in {debut}.",
          '{n} made a debut as an author in {debut}.', 'debut'),
    _fact("What themes run through {n}'s work?", "{n}'s work explores {theme}.",
          'The books of {n} deal with {theme}.', 'theme'),
    _fact('Where did {n} go to university?', '{n} studied {subject} at {university}.',
          '{n} has a degree in {subject} from {university}.', 'education'),
    _fact('Where does {n} live today?', '{n} now lives in {home}.',
          "{n}'s current home is in {home}.", 'home'),
    _fact('In which language does {n} write?', '{n} writes mainly in {language}.',
          "{language} is the language of most of {n}'s books.", 'language'),
    _fact('Which writer influenced {n} the most?', '{n} was most influenced by {influence}.',
          '{influence} had the biggest influence on {n}.', 'influence'),
    _fact('What does {n} enjoy outside of writing?', 'Outside of writing, {n} enjoys {hobby}.',
          'When not writing, {n} likes {hobby}.', 'hobby'),
    _fact('When does {n} usually write?', '{n} usually writes {routine}.',
          'Most of the writing of {n} happens {routine}.', 'routine'),
    _fact('How many books has {n} published?', '{n} has published {count} books.',
          'So far {n} has {count} published books.', 'count'),
    _fact('Who publishes the books of {n}?', "{n}'s books are published by {publisher}.",
          '{publisher} is the publisher of {n}.', 'publisher'),
    _fact('Does {n} use a pen name?', "{n} sometimes writes as '{pen_name}'.",
          "'{pen_name}' is a pen name used by {n}.", 'pen_name'),
]


def _surname(rng):
  return ''.join(rng.sample(_SURNAME_SYLLABLES, rng.choice([2, 3]))).capitalize()


def _date(rng):
  return f'{rng.choice(_MONTHS)} {rng.randint(1, 28)}, {rng.randint(1925, 1990)}'


def _title(rng):
  return f'The {rng.choice(_ADJECTIVES)} {rng.choice(_NOUNS)}'


# Draws one value of an attribute; returns the fields it sets (some attributes set two).
SAMPLERS = {
    'n': lambda rng: {'n': f'{rng.choice(_FIRST_NAMES)} {_surname(rng)}'},
    'place': lambda rng: dict(zip(('city', 'country'), rng.choice(_PLACES))),
    'date': lambda rng: {'date': _date(rng)},
    'genre': lambda rng: {'genre': rng.choice(_GENRES)},
    'father': lambda rng: {'father': rng.choice(_JOBS)},
    'mother': lambda rng: {'mother': rng.choice(_JOBS)},
    'award': lambda rng: {'award': rng.choice(_AWARDS)},
    'book1': lambda rng: {'book1': _title(rng)},
    'book2': lambda rng: {'book2': _title(rng)},
    'debut': lambda rng: {'debut': str(rng.randint(1950, 2015))},
    'theme': lambda rng: {'theme': rng.choice(_THEMES)},
    'education': lambda rng: {'subject': rng.choice(_SUBJECTS),
                              'university': rng.choice(_UNIVERSITIES)},
    'home': lambda rng: {'home': rng.choice(_PLACES)[0]},
    'language': lambda rng: {'language': rng.choice(_LANGUAGES)},
    'influence': lambda rng: {'influence': rng.choice(_INFLUENCES)},
    'hobby': lambda rng: {'hobby': rng.choice(_HOBBIES)},
    'routine': lambda rng: {'routine': rng.choice(_ROUTINES)},
    'count': lambda rng: {'count': rng.choice(_COUNTS)},
    'publisher': lambda rng: {'publisher': rng.choice(_PUBLISHERS)},
    'pen_name': lambda rng: {'pen_name': f'{rng.choice("ABCDEFGHJKLMNPRSTVW")}. {_surname(rng)}'},
}


def sample_author(rng, taken_names):
  """One author's fields, drawn attribute by attribute in :data:`SAMPLERS` order.

  The name is redrawn until it is not in ``taken_names``, and a second book that repeats the
  first gets 'A' in place of 'The' so that the two book questions have different answers.
  """
  fields = {}
  for key, sampler in SAMPLERS.items():
    fields.update(sampler(rng))
  while fields['n'] in taken_names:
    fields.update(SAMPLERS['n'](rng))
  if fields['book2'] == fields['book1']:
    fields['book2'] = fields['book1'].replace('The ', 'A ', 1)
  return fields
